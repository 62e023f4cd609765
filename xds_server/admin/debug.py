"""The /debug/* views as plain functions returning JSON-ready dicts (field names in docs/operations.md).

They read live state (connections, the snapshot cache, the store) and never change it. Times
are RFC 3339 UTC strings, or null for "never".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401 - registers the types for Any -> JSON
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2  # noqa: F401
from google.protobuf import any_pb2, json_format

from xds_server.admin import traffic
from xds_server.config import Problem
from xds_server.memo import Memo
from xds_server.mesh.proxy import Proxy
from xds_server.mesh.rule_warnings import warnings_of
from xds_server.mesh.rules import traffic_rules
from xds_server.resources import PUSH_ORDER, Built, ProxySnapshot, TypeUrl, short_name
from xds_server.xds.status import SyncState, TypeStatus

# Envoy's /config_dump section for each type: (message, list field, entry builder).
DUMP_TYPES = {
    TypeUrl.CLUSTER: "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    TypeUrl.ENDPOINT: "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
    TypeUrl.LISTENER: "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    TypeUrl.ROUTE: "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
}
# Envoy redacts these in its own config_dump; we only ever hold file paths, but never print secrets.
SECRET_KEYS = frozenset({"private_key", "password", "session_ticket_keys", "hmac_secret"})
INLINE_KEYS = frozenset({"inline_bytes", "inline_string"})
REDACTED = "[redacted]"


def rfc3339(t: float) -> str | None:
    if not t:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


# ------------------------------------------------------------------ which proxy
def proxy_name(proxy: Any) -> str:
    return getattr(proxy, "pod_key", proxy.key)


def find_connections(connections: Iterable[Any], wanted: str) -> list[Any]:
    """Connections of the proxy named POD.NAMESPACE, or by node id, or by connection id."""
    return [c for c in connections if wanted in (proxy_name(c.proxy), c.proxy.key, c.id)]


# ------------------------------------------------------------------ syncz
def type_sync(status: TypeStatus | None, type_url: TypeUrl) -> dict[str, Any]:
    if status is None:
        return {"type_url": type_url.value, "subscribed": False, "state": SyncState.NOT_SENT.value,
                "sent": None, "acked": None, "last_nack": None, "responses": 0, "acks": 0, "nacks": 0}
    nack = status.nack
    return {
        "type_url": type_url.value,
        "subscribed": True,
        "state": status.state.value,
        "sent": None if not status.sent_nonce else {
            "version": status.sent_version, "nonce": status.sent_nonce, "at": rfc3339(status.sent_at),
            "resources": status.sent_count},
        "acked": None if not status.acked_nonce else {
            "version": status.acked_version, "nonce": status.acked_nonce, "at": rfc3339(status.acked_at)},
        "last_nack": None if nack is None else {
            "version": nack.version, "nonce": nack.nonce, "error": nack.error, "at": rfc3339(nack.at)},
        "responses": status.responses,
        "acks": status.acks,
        "nacks": status.nacks,
    }


def syncz(connections: Iterable[Any]) -> dict[str, Any]:
    out = []
    for conn in sorted(connections, key=lambda c: (proxy_name(c.proxy), c.id)):
        statuses = conn.machine.statuses()
        out.append({
            "proxy": proxy_name(conn.proxy),
            "node_id": conn.proxy.key,
            "connection_id": conn.id,
            "kind": conn.kind,
            "types": {short_name(t): type_sync(statuses.get(t.value), t) for t in PUSH_ORDER},
        })
    return {"proxies": out}


# ------------------------------------------------------------------ adsz
def subscriptions(machine: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for type_url, state in machine.types.items():
        sub = state.sub
        out[short_name(type_url)] = {"wildcard": sub.wildcard, "names": sorted(sub.names)}
    return out


def adsz(connections: Iterable[Any]) -> dict[str, Any]:
    out = []
    for conn in sorted(connections, key=lambda c: (proxy_name(c.proxy), c.id)):
        proxy = conn.proxy
        out.append({
            "connection_id": conn.id,
            "proxy": proxy_name(proxy),
            "node_id": proxy.key,
            "namespace": getattr(proxy, "namespace", ""),
            "peer": conn.peer,
            "connected_since": rfc3339(conn.connected_at),
            "kind": conn.kind,
            "method": conn.method,
            "subscriptions": subscriptions(conn.machine),
            "metadata": dict(getattr(proxy, "metadata", {}) or {}),
        })
    return {"total": len(out), "connections": out}


# ------------------------------------------------------------------ config_dump
def redact(value: Any) -> Any:
    """Replace inline secret material with a marker, as Envoy's own config_dump does."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in SECRET_KEYS and isinstance(v, dict):
                out[k] = {ik: (REDACTED if ik in INLINE_KEYS else redact(iv)) for ik, iv in v.items()}
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def resource_json(built: Built) -> dict[str, Any]:
    """The resource as an Any in JSON, '@type' first (the payload is decoded by its type URL)."""
    msg = any_pb2.Any(type_url=built.type_url.value, value=built.payload)
    return redact(json_format.MessageToDict(msg, preserving_proto_field_name=True))


def _entry(type_url: TypeUrl, name: str, built: Built, status: TypeStatus | None) -> dict[str, Any]:
    updated = rfc3339(status.sent_at) if status is not None and \
        status.resource_versions.get(name) == built.version else None
    common: dict[str, Any] = {"version_info": built.version}
    if updated:
        common["last_updated"] = updated
    body = resource_json(built)
    if type_url is TypeUrl.CLUSTER:
        return {**common, "cluster": body}
    if type_url is TypeUrl.ENDPOINT:
        return {**common, "endpoint_config": body}
    if type_url is TypeUrl.LISTENER:
        return {"name": name, "active_state": {**common, "listener": body}}
    return {**common, "route_config": body}


_LIST_FIELD = {TypeUrl.CLUSTER: "dynamic_active_clusters", TypeUrl.ENDPOINT: "dynamic_endpoint_configs",
               TypeUrl.LISTENER: "dynamic_listeners", TypeUrl.ROUTE: "dynamic_route_configs"}


def config_dump(snapshot: ProxySnapshot, statuses: Mapping[str, TypeStatus] | None = None,
                types: Iterable[TypeUrl] = PUSH_ORDER) -> dict[str, Any]:
    """Envoy's /config_dump?include_eds shape for one proxy's current snapshot (names sorted)."""
    statuses = statuses or {}
    configs = []
    for type_url in types:
        status = statuses.get(type_url.value)
        entries = [_entry(type_url, name, b, status) for name, b in sorted(snapshot.get(type_url).items())]
        configs.append({"@type": DUMP_TYPES[type_url], _LIST_FIELD[type_url]: entries})
    return {"configs": configs}


# ------------------------------------------------------------------ configz
def _configz_object(origin: str, obj: Any) -> dict[str, Any]:
    return {"kind": obj.ref.kind, "namespace": obj.ref.namespace, "name": obj.ref.name, "origin": origin}


def _problem_json(origin: str, p: Problem) -> dict[str, Any]:
    return {
        "origin": origin,
        "where": p.where,
        "kind": p.ref.kind if p.ref else None,
        "namespace": p.ref.namespace if p.ref else None,
        "name": p.ref.name if p.ref else None,
        "message": p.message,
        "severity": "warning" if p.warning else "error",
    }


def configz(store: Any, memo: Memo | None = None, proxy: Proxy | None = None) -> dict[str, Any]:
    """The objects held, the problems reported, and what the VirtualServices and DestinationRules
    amount to: for the whole mesh (`traffic`), and for `proxy` when given (`proxy_traffic`)."""
    held = list(store.objects())
    objects = sorted((_configz_object(origin, obj) for origin, obj in held),
                     key=lambda o: (o["kind"], o["namespace"], o["name"]))
    counts: dict[str, int] = {}
    for o in objects:
        counts[o["kind"]] = counts.get(o["kind"], 0) + 1
    rejected = [_problem_json(origin, p) for origin, problems in sorted(store.problems.items()) for p in problems]
    out: dict[str, Any] = {"counts": dict(sorted(counts.items())), "objects": objects, "rejected": rejected}
    view = store.view()
    memo = memo if memo is not None else Memo()
    if view.virtual_services or view.destination_rules:
        origins = {obj.ref: origin for origin, obj in held}
        rules = traffic_rules(view, memo)
        warnings = warnings_of(rules, view.destination_rules)
        out["traffic"] = {
            **traffic.rules_summary(rules),
            "warnings": [_problem_json(origins.get(p.ref, "") if p.ref else "", p) for p in warnings],
        }
    if proxy is not None:
        out["proxy_traffic"] = traffic.proxy_rules(view, proxy, memo)
    return out
