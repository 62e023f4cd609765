"""Helpers for the outbound/scope tests: objects from manifests, one-call generate, decoding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from xds_server.config import ConfigObject
from xds_server.config.parse import parse
from xds_server.mesh.scope import Scope, scope_for
from xds_server.mesh.workload import sidecar_for, workload_of
from xds_server.resources import ProxySnapshot, TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import Memo, generate, proxy_from_node


def objects(text: str) -> list[ConfigObject]:
    """Config objects from multi-document YAML; any validation error fails the test."""
    out = []
    for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
        obj, problems = parse(doc, f"test:{i}")
        errors = [p for p in problems if not p.warning]
        assert obj is not None and not errors, [str(p) for p in problems]
        out.append(obj)
    return out


def ts(n: int) -> str:
    return f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}Z"


def svc(name: str, ns: str = "default", *, ports: str = "[{name: http, port: 9080}]", ip: str = "",
        created: int = 0, selector: str = "", annotations: str = "", headless: bool = False) -> str:
    cluster_ip = "None" if headless else (ip or f"10.96.{created // 250}.{created % 250 + 1}")
    sel = selector or f"{{app: {name}}}"
    ann = f"\n  annotations: {annotations}" if annotations else ""
    return f"""---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  creationTimestamp: "{ts(created)}"{ann}
spec:
  clusterIP: {cluster_ip}
  selector: {sel}
  ports: {ports}
"""


def pod(name: str, ns: str = "default", *, ip: str, labels: str = "", ready: bool = True,
        ports: str = "[]", terminating: bool = False) -> str:
    deletion = '\n  deletionTimestamp: "2026-01-02T00:00:00Z"' if terminating else ""
    return f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {labels or "{app: " + name.rsplit("-", 1)[0] + "}"}{deletion}
spec:
  containers: [{{name: c, ports: {ports}}}]
status:
  podIP: {ip}
  conditions: [{{type: Ready, status: "{"True" if ready else "False"}"}}]
"""


def manifest(kind: str, spec: str, *, name: str, ns: str = "default", created: int = 0,
             api: str = "networking.istio.io/v1") -> str:
    """One Istio object as YAML: `spec` is the body of its spec, indented here."""
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return f"""---
apiVersion: {api}
kind: {kind}
metadata:
  name: {name}
  namespace: {ns}
  creationTimestamp: "{ts(created)}"
spec:
{body}
"""


def sidecar(spec: str, *, name: str = "default", ns: str = "default", created: int = 0) -> str:
    return manifest("Sidecar", spec, name=name, ns=ns, created=created)


def service_entry(spec: str, *, name: str = "se", ns: str = "default", created: int = 0) -> str:
    return manifest("ServiceEntry", spec, name=name, ns=ns, created=created)


def virtual_service(spec: str, *, name: str = "vs", ns: str = "default", created: int = 0,
                    api: str = "networking.istio.io/v1") -> str:
    return manifest("VirtualService", spec, name=name, ns=ns, created=created, api=api)


def destination_rule(spec: str, *, name: str = "dr", ns: str = "default", created: int = 0,
                     api: str = "networking.istio.io/v1") -> str:
    return manifest("DestinationRule", spec, name=name, ns=ns, created=created, api=api)


def mesh(mode: str = "ALLOW_ANY", root: str = "istio-system") -> str:
    return f"""---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: {root}}}
data:
  mesh: |
    rootNamespace: {root}
    outboundTrafficPolicy: {{mode: {mode}}}
"""


def view_of(*texts: str, generation: int = 1, extra: Iterable[ConfigObject] = ()) -> StoreView:
    return StoreView.build(generation, [*objects("".join(texts)), *extra])


def proxy(pod_name: str = "client-1", ns: str = "default", ip: str = "10.244.0.100",
          metadata: Mapping[str, Any] | None = None) -> Any:
    md = {"INSTANCE_IPS": ip, "NAMESPACE": ns, **(metadata or {})}
    return proxy_from_node(f"sidecar~{ip}~{pod_name}.{ns}~{ns}.svc.cluster.local", md)


def scope_of(view: StoreView, p: Any, memo: Memo | None = None) -> Scope:
    memo = memo if memo is not None else Memo()
    workload = workload_of(view, p)
    return scope_for(view, p.namespace, sidecar_for(view, workload), memo)


def hosts(scope: Scope) -> list[str]:
    return sorted(s.hostname for s in scope.services)


def snap(view: StoreView, p: Any = None, memo: Memo | None = None) -> ProxySnapshot:
    return generate(view, p or proxy(), memo if memo is not None else Memo()).snapshot


def names(s: ProxySnapshot, type_url: TypeUrl) -> list[str]:
    return sorted(s.get(type_url))


def outbound_clusters(s: ProxySnapshot) -> list[str]:
    return [n for n in names(s, TypeUrl.CLUSTER) if n.startswith("outbound|")]


def cluster(s: ProxySnapshot, name: str) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster.FromString(s.get(TypeUrl.CLUSTER)[name].payload)


def listener(s: ProxySnapshot, name: str) -> listener_pb2.Listener:
    return listener_pb2.Listener.FromString(s.get(TypeUrl.LISTENER)[name].payload)


def route(s: ProxySnapshot, name: str) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration.FromString(s.get(TypeUrl.ROUTE)[name].payload)


def assignment(s: ProxySnapshot, name: str) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment.FromString(s.get(TypeUrl.ENDPOINT)[name].payload)


def endpoint_addresses(cla: endpoint_pb2.ClusterLoadAssignment) -> list[str]:
    out = []
    for loc in cla.endpoints:
        for lb in loc.lb_endpoints:
            a = lb.endpoint.address.socket_address
            out.append(f"{a.address}:{a.port_value}")
    return sorted(out)


def vhost_domains(rc: route_pb2.RouteConfiguration) -> dict[str, list[str]]:
    return {v.name: list(v.domains) for v in rc.virtual_hosts}


def tcp_cluster(chain: Any) -> str:
    out = tcp_proxy_pb2.TcpProxy()
    chain.filters[-1].typed_config.Unpack(out)
    return out.cluster


def rds_name(chain: Any) -> str:
    out = hcm_pb2.HttpConnectionManager()
    chain.filters[-1].typed_config.Unpack(out)
    return out.rds.route_config_name


def keys(d: Mapping[str, Any]) -> list[str]:
    return sorted(d)
