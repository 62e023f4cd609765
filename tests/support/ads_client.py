"""A raw ADS client over real gRPC that logs every response (the 'raw' oracle of the spec)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401 - registers types for Any unpacking
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

NO_RESPONSE_WINDOW = 0.4  # how long "no response" is awaited (a negative check needs a window)


async def until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll a condition with a deadline (never sleep to synchronise)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def node(node_id: str, **metadata: Any) -> base_pb2.Node:
    md = struct_pb2.Struct()
    md.update(metadata)
    return base_pb2.Node(id=node_id, metadata=md)


class AdsClient:
    def __init__(self, target: str, delta: bool = False, method: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None,
                 options: tuple[tuple[str, object], ...] = ()) -> None:
        self.channel = (grpc.aio.secure_channel(target, credentials, options=options) if credentials is not None
                        else grpc.aio.insecure_channel(target, options=options))
        self.delta = delta
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self.responses: list[Any] = []
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        if method is not None:
            call_factory = self.channel.stream_stream(
                method,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=(discovery_pb2.DeltaDiscoveryResponse if delta
                                       else discovery_pb2.DiscoveryResponse).FromString)
            self.call = call_factory(self._iter())
        elif delta:
            self.call = stub.DeltaAggregatedResources(self._iter())
        else:
            self.call = stub.StreamAggregatedResources(self._iter())
        self._reader = asyncio.create_task(self._read())

    async def _iter(self) -> Any:
        while True:
            req = await self._requests.get()
            if req is None:
                return
            yield req

    async def _read(self) -> None:
        try:
            async for resp in self.call:
                self.responses.append(resp)
                await self._inbox.put(resp)
        except grpc.aio.AioRpcError as e:
            await self._inbox.put(e)
        except asyncio.CancelledError:
            pass
        await self._inbox.put(None)

    def send(self, **fields: Any) -> None:
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        msg = cls()
        for key, value in fields.items():
            if key == "node":
                msg.node.CopyFrom(value)
            elif key == "error_detail":
                msg.error_detail.message = value
                msg.error_detail.code = 3
            elif key == "initial_resource_versions":
                msg.initial_resource_versions.update(value)
            elif isinstance(value, list | tuple):
                getattr(msg, key).extend(value)
            else:
                setattr(msg, key, value)
        self._requests.put_nowait(msg)

    async def recv(self, timeout: float = 5.0) -> Any:
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if isinstance(item, grpc.aio.AioRpcError):
            raise item
        if item is None:
            raise EOFError("stream ended")
        return item

    async def expect_none(self, window: float = NO_RESPONSE_WINDOW) -> None:
        try:
            item = await asyncio.wait_for(self._inbox.get(), window)
        except TimeoutError:
            return
        raise AssertionError(f"expected no response, got {item}")

    async def status(self, timeout: float = 5.0) -> grpc.StatusCode:
        """Wait for the stream to end and return its status code."""
        while True:
            item = await asyncio.wait_for(self._inbox.get(), timeout)
            if isinstance(item, grpc.aio.AioRpcError):
                return item.code()
            if item is None:
                return grpc.StatusCode.OK

    async def close(self) -> None:
        self._requests.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.channel.close()


def names(resp: Any) -> list[str]:
    """Resource names in a SotW or delta response."""
    if isinstance(resp, discovery_pb2.DeltaDiscoveryResponse):
        return sorted(r.name for r in resp.resources)
    out = []
    for any_msg in resp.resources:
        from xds_server.resources import TypeUrl

        cls = {
            TypeUrl.CLUSTER: "envoy.config.cluster.v3.cluster_pb2.Cluster",
            TypeUrl.ENDPOINT: "envoy.config.endpoint.v3.endpoint_pb2.ClusterLoadAssignment",
            TypeUrl.LISTENER: "envoy.config.listener.v3.listener_pb2.Listener",
            TypeUrl.ROUTE: "envoy.config.route.v3.route_pb2.RouteConfiguration",
        }[TypeUrl(any_msg.type_url)]
        module_name, _, cls_name = cls.rpartition(".")
        import importlib

        msg = getattr(importlib.import_module(module_name), cls_name)()
        any_msg.Unpack(msg)
        out.append(msg.cluster_name if hasattr(msg, "cluster_name") else msg.name)
    return sorted(out)
