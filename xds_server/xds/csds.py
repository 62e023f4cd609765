"""CSDS (envoy.service.status.v3.ClientStatusDiscoveryService) on the xDS gRPC server (gRPC A40).

Answers, for every connected proxy (matching the request's node matchers, OR-ed), one
ClientConfig whose generic_xds_configs list each resource the proxy is subscribed to, as held
now in its snapshot, with a per-resource status:
  SYNCED    this version was sent and the client ACKed it;
  STALE     this version was sent and is not ACKed yet;
  ERROR     this version was sent and the client NACKed it (error_state carries Envoy's text);
  NOT_SENT  the client does not have this version yet.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2
from google.protobuf import any_pb2, timestamp_pb2

from xds_server.resources import PUSH_ORDER, ProxySnapshot
from xds_server.xds.status import SyncState, TypeStatus

ConfigStatus = csds_pb2.ConfigStatus
ResourceStatus = config_dump_shared_pb2.ClientResourceStatus


def string_matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    which = matcher.WhichOneof("match_pattern")
    fold = matcher.ignore_case and which != "safe_regex"
    v = value.lower() if fold else value

    def p(s: str) -> str:
        return s.lower() if fold else s

    if which == "exact":
        return v == p(matcher.exact)
    if which == "prefix":
        return v.startswith(p(matcher.prefix))
    if which == "suffix":
        return v.endswith(p(matcher.suffix))
    if which == "contains":
        return p(matcher.contains) in v
    if which == "safe_regex":
        try:
            return re.fullmatch(matcher.safe_regex.regex, value) is not None
        except re.error:
            return False
    return False  # `custom` matchers are not supported: match nothing rather than everything


def node_matches(matcher: node_pb2.NodeMatcher, node_id: str, metadata: Any) -> bool:
    if matcher.HasField("node_id") and not string_matches(matcher.node_id, node_id):
        return False
    for struct_matcher in matcher.node_metadatas:
        value: Any = metadata
        for segment in struct_matcher.path:
            value = value.get(segment.key) if isinstance(value, dict) else None
        vm = struct_matcher.value
        which = vm.WhichOneof("match_pattern")
        if which == "present_match":
            if (value is not None) != vm.present_match:
                return False
        elif which == "string_match":
            if not isinstance(value, str) or not string_matches(vm.string_match, value):
                return False
        elif which == "bool_match":
            if value not in ("true", "false", True, False) or str(value).lower() != str(vm.bool_match).lower():
                return False
        else:
            return False  # other value matchers are not supported
    return True


def _timestamp(t: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def resource_status(status: TypeStatus | None, name: str, version: str) -> SyncState:
    if status is None or status.resource_versions.get(name) != version:
        return SyncState.NOT_SENT
    return status.state if status.state is not SyncState.NOT_SENT else SyncState.STALE


def client_config(conn: Any, snapshot: ProxySnapshot, with_contents: bool = True) -> csds_pb2.ClientConfig:
    proxy = conn.proxy
    out = csds_pb2.ClientConfig(node=base_pb2.Node(id=proxy.key))
    for key, value in sorted(dict(getattr(proxy, "metadata", {}) or {}).items()):
        out.node.metadata.fields[key].string_value = value
    statuses = conn.machine.statuses()
    for type_url in PUSH_ORDER:
        type_state = conn.machine.types.get(type_url)
        if type_state is None:
            continue  # never requested on this stream
        status = statuses.get(type_url.value)
        for name, built in sorted(type_state.sub.select(snapshot.get(type_url)).items()):
            state = resource_status(status, name, built.version)
            cfg = out.generic_xds_configs.add(type_url=type_url.value, name=name, version_info=built.version,
                                              config_status=getattr(ConfigStatus, state.value))
            if with_contents:
                cfg.xds_config.CopyFrom(any_pb2.Any(type_url=type_url.value, value=built.payload))
            if status is not None and state is not SyncState.NOT_SENT:
                cfg.last_updated.CopyFrom(_timestamp(status.sent_at))
            if state is SyncState.SYNCED:
                cfg.client_status = ResourceStatus.ACKED
            elif state is SyncState.ERROR and status is not None and status.nack is not None:
                cfg.client_status = ResourceStatus.NACKED
                cfg.error_state.details = status.nack.error
                cfg.error_state.version_info = status.nack.version
                cfg.error_state.last_update_attempt.CopyFrom(_timestamp(status.nack.at))
    return out


# scope(context) -> None (the caller may see every proxy) or a predicate on connections (mTLS, auth.py)
Scope = Callable[[Any], Callable[[Any], bool] | None]


class CsdsServicer:
    """Both methods of the service (generated csds_pb2_grpc registers them by name)."""

    def __init__(self, connections: Callable[[], Iterable[Any]], snapshot_of: Callable[[str], Any],
                 scope: Scope | None = None) -> None:
        self._connections = connections
        self._snapshot_of = snapshot_of
        self._scope = scope

    def answer(self, request: csds_pb2.ClientStatusRequest,
               visible: Callable[[Any], bool] | None = None) -> csds_pb2.ClientStatusResponse:
        response = csds_pb2.ClientStatusResponse()
        # A proxy that reconnected has two streams for a moment: report its newest one.
        newest: dict[str, Any] = {}
        for conn in self._connections():
            if visible is not None and not visible(conn):
                continue
            held = newest.get(conn.proxy.key)
            if held is None or conn.connected_at >= held.connected_at:
                newest[conn.proxy.key] = conn
        for key in sorted(newest):
            conn = newest[key]
            metadata = dict(getattr(conn.proxy, "metadata", {}) or {})
            if request.node_matchers and not any(node_matches(m, key, metadata) for m in request.node_matchers):
                continue
            snapshot = self._snapshot_of(key)
            if snapshot is None:
                continue
            response.config.append(client_config(conn, snapshot, not request.exclude_resource_contents))
        return response

    async def FetchClientStatus(self, request: csds_pb2.ClientStatusRequest,
                                context: grpc.aio.ServicerContext[Any, Any]) -> csds_pb2.ClientStatusResponse:
        return self.answer(request, self._scope(context) if self._scope is not None else None)

    async def StreamClientStatus(
            self, request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest],
            context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        visible = self._scope(context) if self._scope is not None else None
        async for request in request_iterator:
            yield self.answer(request, visible)


def register(server: grpc.aio.Server, services: Any, cache: Any, scope: Scope | None = None) -> CsdsServicer:
    """Add CSDS to the xDS gRPC server (before it starts); `scope` limits what a caller sees (mTLS)."""
    servicer = CsdsServicer(lambda: list(services.connections.values()), cache.get, scope)
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(servicer, server)
    return servicer
