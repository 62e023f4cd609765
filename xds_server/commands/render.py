"""`xds-server render`: the resources one proxy would get, as Envoy's /config_dump prints them.

`render_snapshot` is the same code path the server uses (StoreView -> generate) and is what the
golden tests and the real-Envoy acceptance tests call.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from xds_server.commands.bootstrap import BootstrapError, parse_metadata
from xds_server.config import ConfigObject, Pod
from xds_server.config.mesh_parse import parse_mesh_config
from xds_server.mesh.rule_warnings import warnings_of
from xds_server.mesh.rules import traffic_rules
from xds_server.resources import Built, ProxySnapshot, TypeUrl
from xds_server.sources.files import load_directory
from xds_server.store.view import StoreView
from xds_server.translate import Memo, Proxy, generate, proxy_from_node

MESSAGES: dict[TypeUrl, type[Message]] = {
    TypeUrl.CLUSTER: cluster_pb2.Cluster,
    TypeUrl.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    TypeUrl.LISTENER: listener_pb2.Listener,
    TypeUrl.ROUTE: route_pb2.RouteConfiguration,
}
SHORT = {"cds": TypeUrl.CLUSTER, "eds": TypeUrl.ENDPOINT, "lds": TypeUrl.LISTENER, "rds": TypeUrl.ROUTE}
# Envoy's own /config_dump order.
DUMP_ORDER = (TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE)


class RenderError(ValueError):
    pass


# ------------------------------------------------------------------ inputs
def load_objects(config_dir: str, mesh_config: str | None = None) -> list[ConfigObject]:
    """Every valid object below config_dir, plus the --mesh-config file; problems raise."""
    objects, problems = load_directory(config_dir)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise RenderError("\n".join(str(p) for p in errors))
    if mesh_config:
        try:
            with open(mesh_config, encoding="utf-8") as f:
                mesh, mesh_problems = parse_mesh_config(f.read(), mesh_config)
        except OSError as e:
            raise RenderError(f"--mesh-config {mesh_config}: {e.strerror}") from None
        if mesh is None or any(not p.warning for p in mesh_problems):
            raise RenderError("\n".join(str(p) for p in mesh_problems) or f"--mesh-config {mesh_config}: invalid")
        objects.append(mesh)
    return objects


def proxy_for(view: StoreView, pod_key: str, metadata: Mapping[str, Any] | None = None) -> Proxy:
    """The Proxy an injected Envoy for POD.NAMESPACE would announce (node id from the Pod if known)."""
    name, sep, namespace = pod_key.partition(".")
    if not sep or not name or not namespace:
        raise RenderError(f"--proxy {pod_key!r}: expected POD.NAMESPACE")
    md = dict(metadata or {})
    pod: Pod | None = view.pod(namespace, name)
    ip = pod.ip if pod is not None else str(md.get("INSTANCE_IPS", "")).split(",")[0].strip()
    if pod is not None and pod.ips and "INSTANCE_IPS" not in md:
        md["INSTANCE_IPS"] = ",".join(pod.ips)
    md.setdefault("NAMESPACE", namespace)
    return proxy_from_node(f"sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local", md)


def render_snapshot(config: str | Iterable[ConfigObject], proxy: Proxy | str,
                    metadata: Mapping[str, Any] | None = None, *, mesh_config: str | None = None,
                    memo: Memo | None = None) -> ProxySnapshot:
    """Translate a directory (or objects) for one proxy, exactly as the server would."""
    objects = load_objects(config, mesh_config) if isinstance(config, str) else list(config)
    view = StoreView.build(1, objects)
    if isinstance(proxy, str):
        proxy = proxy_for(view, proxy, metadata)
    return generate(view, proxy, memo if memo is not None else Memo()).snapshot


# ------------------------------------------------------------------ output
def _message(built: Built) -> Message:
    msg = MESSAGES[built.type_url]()
    msg.ParseFromString(built.payload)
    return msg


def _any(msg: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def config_dump(snapshot: ProxySnapshot, types: Iterable[TypeUrl] = DUMP_ORDER) -> dict[str, Any]:
    """A /config_dump?include_eds-shaped dict: resources sorted by name, version_info = content hash."""
    wanted = set(types)
    configs: list[Message] = []
    for type_url in DUMP_ORDER:
        if type_url not in wanted:
            continue
        items = sorted(snapshot.get(type_url).items())
        if type_url is TypeUrl.CLUSTER:
            configs.append(config_dump_shared_pb2.ClustersConfigDump(dynamic_active_clusters=[
                config_dump_shared_pb2.ClustersConfigDump.DynamicCluster(
                    version_info=b.version, cluster=_any(_message(b)))
                for _, b in items]))
        elif type_url is TypeUrl.ENDPOINT:
            configs.append(config_dump_shared_pb2.EndpointsConfigDump(dynamic_endpoint_configs=[
                config_dump_shared_pb2.EndpointsConfigDump.DynamicEndpointConfig(
                    version_info=b.version, endpoint_config=_any(_message(b)))
                for _, b in items]))
        elif type_url is TypeUrl.LISTENER:
            configs.append(config_dump_shared_pb2.ListenersConfigDump(dynamic_listeners=[
                config_dump_shared_pb2.ListenersConfigDump.DynamicListener(
                    name=name,
                    active_state=config_dump_shared_pb2.ListenersConfigDump.DynamicListenerState(
                        version_info=b.version, listener=_any(_message(b))))
                for name, b in items]))
        elif type_url is TypeUrl.ROUTE:
            configs.append(config_dump_shared_pb2.RoutesConfigDump(dynamic_route_configs=[
                config_dump_shared_pb2.RoutesConfigDump.DynamicRouteConfig(
                    version_info=b.version, route_config=_any(_message(b)))
                for _, b in items]))
    return {"configs": [json_format.MessageToDict(_any(c), preserving_proto_field_name=True) for c in configs]}


def to_json(snapshot: ProxySnapshot, types: Iterable[TypeUrl] = DUMP_ORDER) -> str:
    """The printed form; keys sorted because protobuf maps (metadata, typed options) have no order."""
    return json.dumps(config_dump(snapshot, types), indent=2, sort_keys=True) + "\n"


def rules_json(view: StoreView, proxy: Proxy) -> str:
    """`--type rules`: the VirtualServices and DestinationRules as this proxy gets them, plus the
    cross-object warnings (admin/traffic.py, mesh/rule_warnings.py; the same view as /debug/configz?proxy=)."""
    from xds_server.admin import traffic
    from xds_server.commands.validate import format_problem

    memo = Memo()
    body = traffic.proxy_rules(view, proxy, memo)
    warnings = warnings_of(traffic_rules(view, memo), view.destination_rules)
    body["warnings"] = [format_problem(p) for p in warnings]
    return json.dumps(body, indent=2) + "\n"


def run(args: argparse.Namespace) -> int:
    types = DUMP_ORDER if args.type in ("all", "rules") else (SHORT[args.type],)
    try:
        metadata = parse_metadata(args.metadata)
        objects = load_objects(args.config_dir, args.mesh_config)
        view = StoreView.build(1, objects)
        proxy = proxy_for(view, args.proxy, metadata)
        if args.type == "rules":
            sys.stdout.write(rules_json(view, proxy))
            return 0
        snapshot = generate(view, proxy, Memo()).snapshot
    except (RenderError, BootstrapError) as e:
        print(f"xds-server render: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"xds-server render: {args.config_dir}: {e.strerror}", file=sys.stderr)
        return 2
    sys.stdout.write(to_json(snapshot, types))
    return 0
