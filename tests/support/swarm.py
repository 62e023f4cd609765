"""Many lightweight Envoy-like delta ADS streams in one process, over a few channels.

Each stream subscribes to CDS and LDS (wildcard), ACKs every response, remembers the versions it
has, and on reconnect sends them as initial_resource_versions, as Envoy does. A refused or broken
stream is retried after a jittered backoff (Envoy: transient codes, 0.5 s base). `converged` means
the current stream got its answer for both types. Used by the reconnect-storm test and bench/soak.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from typing import Any

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DeltaDiscoveryResponse

from tests.support.ads_client import node

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
TYPES = (CDS, LDS)


class SwarmStream:
    def __init__(self, swarm: Swarm, index: int) -> None:
        self.swarm = swarm
        self.index = index
        self.node_id = swarm.node_id(index)
        self.known: dict[str, dict[str, str]] = {t: {} for t in TYPES}  # type -> name -> version
        self.answered: set[str] = set()  # types answered on the current stream
        self.versions: dict[str, str] = {}  # type -> system_version_info of the last response
        self.responses = 0
        self.resources = 0  # resources received (a resync that sends nothing new adds 0)
        self.call: Any = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def converged(self) -> bool:
        return self.answered == set(TYPES)

    def start(self) -> None:
        self.closing = False
        self.answered = set()
        self.task = asyncio.create_task(self._run(), name=f"swarm-{self.index}")

    async def stop(self) -> None:
        self.closing = True
        if self.call is not None:
            self.call.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        backoff = 0.5
        while not self.closing:
            code = await self._once()
            if self.closing:
                return
            self.swarm.endings[code] += 1
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 4.0)

    async def _once(self) -> str:
        self.answered = set()
        outbox: asyncio.Queue[DeltaDiscoveryRequest | None] = asyncio.Queue()
        for i, type_url in enumerate(TYPES):
            req = DeltaDiscoveryRequest(type_url=type_url)
            if i == 0:
                req.node.CopyFrom(self.swarm.node_message(self.node_id))
            req.initial_resource_versions.update(self.known[type_url])
            outbox.put_nowait(req)

        async def requests() -> Any:
            while (req := await outbox.get()) is not None:
                yield req

        channel = self.swarm.channel(self.index)
        self.call = channel.stream_stream(METHOD, request_serializer=DeltaDiscoveryRequest.SerializeToString,
                                          response_deserializer=DeltaDiscoveryResponse.FromString)(requests())
        try:
            async for resp in self.call:
                known = self.known.setdefault(resp.type_url, {})
                for r in resp.resources:
                    known[r.name] = r.version
                for name in resp.removed_resources:
                    known.pop(name, None)
                self.responses += 1
                self.resources += len(resp.resources)
                self.versions[resp.type_url] = resp.system_version_info
                self.answered.add(resp.type_url)
                outbox.put_nowait(DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce))
            return "OK"
        except grpc.aio.AioRpcError as e:
            self.swarm.details.setdefault(e.code().name, e.details())
            return e.code().name
        finally:
            outbox.put_nowait(None)
            self.call = None


class Swarm:
    def __init__(self, target: str, streams: int, channels: int = 8, namespace: str = "default",
                 metadata: dict[str, Any] | None = None) -> None:
        self.target = target
        self.namespace = namespace
        self.metadata = metadata or {}
        self.endings: Counter[str] = Counter()  # how streams ended before a retry, by status code
        self.details: dict[str, str] = {}  # the first details text seen per code
        self._channels: list[grpc.aio.Channel] = []
        self._channel_count = channels
        self._nodes: dict[str, Any] = {}
        self.streams = [SwarmStream(self, i) for i in range(streams)]

    def node_id(self, i: int) -> str:
        return f"sidecar~10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}~swarm-{i}.{self.namespace}~" \
               f"{self.namespace}.svc.cluster.local"

    def node_message(self, node_id: str) -> Any:
        msg = self._nodes.get(node_id)
        if msg is None:
            msg = self._nodes[node_id] = node(node_id, **self.metadata)
        return msg

    def channel(self, i: int) -> grpc.aio.Channel:
        if not self._channels:
            opts = (("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1))
            self._channels = [grpc.aio.insecure_channel(self.target, options=(*opts, ("swarm.channel", c)))
                              for c in range(self._channel_count)]
        return self._channels[i % len(self._channels)]

    def start(self) -> None:
        for s in self.streams:
            s.start()

    def converged(self) -> int:
        return sum(s.converged for s in self.streams)

    async def wait_converged(self, timeout: float) -> float:
        """Seconds until every stream converged (raises on timeout)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while self.converged() < len(self.streams):
            if loop.time() - start > timeout:
                raise AssertionError(f"only {self.converged()}/{len(self.streams)} streams converged in {timeout}s "
                                     f"(endings: {dict(self.endings)})")
            await asyncio.sleep(0.05)
        return loop.time() - start

    async def drop_all(self) -> None:
        """Every stream and connection goes away at once (a network blip, a node drain)."""
        await asyncio.gather(*(s.stop() for s in self.streams))
        channels, self._channels = self._channels, []
        await asyncio.gather(*(c.close() for c in channels))

    async def reconnect_all(self) -> None:
        """Drop everything, then every stream reconnects at once with what it already has."""
        await self.drop_all()
        self.start()

    async def close(self) -> None:
        await self.drop_all()
