"""Builders for the inbound tests: config objects from YAML-ish dicts, a proxy, decoded results,
and `envoy --mode validate` over a static bootstrap holding what build_inbound produced."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import envoy as envoy_wheel
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from google.protobuf import json_format

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import (
    ContainerPort,
    IstioServiceEntry,
    IstioSidecar,
    MeshConfig,
    ObjectMeta,
    Pod,
    Service,
    ServicePort,
)
from xds_server.config.refs import FrozenDict
from xds_server.memo import Memo
from xds_server.mesh.proxy import proxy_from_node
from xds_server.mesh.workload import sidecar_for, workload_of
from xds_server.store.view import StoreView
from xds_server.translate.inbound import InboundParts, build_inbound

POD_IP = "10.244.1.7"
NS = "default"
APP = FrozenDict(app="reviews")


def ts(n: int) -> str:
    """A creation timestamp n minutes into a fixed day (older = smaller n)."""
    return f"2026-01-01T00:{n:02d}:00Z"


def pod(name: str = "reviews-1", *, ns: str = NS, labels: Mapping[str, str] = APP,
        ips: tuple[str, ...] = (POD_IP,), ports: Iterable[tuple[int, str]] = ()) -> Pod:
    return Pod(ObjectMeta(name, ns, labels=FrozenDict(labels)), ips=ips, ready=True,
               container_ports=tuple(ContainerPort(p, n) for p, n in ports))


def service(name: str = "reviews", *ports: ServicePort, ns: str = NS,
            selector: Mapping[str, str] | None = APP, created: int = 0, type_: str = "ClusterIP") -> Service:
    return Service(ObjectMeta(name, ns, creation_timestamp=ts(created)), ports=ports,
                   selector=FrozenDict(selector) if selector is not None else None,
                   cluster_ip="10.96.0.10", type=type_)


def sport(port: int, name: str = "", target: int | str | None = None, *, l4: str = "TCP",
          app_protocol: str = "") -> ServicePort:
    return ServicePort(port=port, name=name, protocol=l4, app_protocol=app_protocol, target_port=target)


def sidecar(spec: Mapping[str, Any] | str, *, name: str = "default", ns: str = NS) -> IstioSidecar:
    """A Sidecar from its `spec` (Istio camelCase, as in Istio's Sidecar reference examples)."""
    data = yaml.safe_load(spec) if isinstance(spec, str) else spec
    return IstioSidecar(ObjectMeta(name, ns), json_format.ParseDict(data, pb.Sidecar()))


def service_entry(spec: Mapping[str, Any] | str, *, name: str = "se", ns: str = NS,
                  created: int = 0) -> IstioServiceEntry:
    data = yaml.safe_load(spec) if isinstance(spec, str) else spec
    return IstioServiceEntry(ObjectMeta(name, ns, creation_timestamp=ts(created)),
                             json_format.ParseDict(data, pb.ServiceEntry()))


@dataclass
class Result:
    parts: InboundParts

    @property
    def clusters(self) -> dict[str, cluster_pb2.Cluster]:
        return {b.name: cluster_pb2.Cluster.FromString(b.payload) for b in self.parts.clusters}

    @property
    def listeners(self) -> dict[str, listener_pb2.Listener]:
        return {b.name: listener_pb2.Listener.FromString(b.payload) for b in self.parts.listeners}

    @property
    def virtual(self) -> listener_pb2.Listener:
        return self.listeners["virtualInbound"]

    def chains(self, name: str, listener: str = "virtualInbound") -> list[lc_pb2.FilterChain]:
        return [c for c in self.listeners[listener].filter_chains if c.name == name]

    def chain(self, name: str, listener: str = "virtualInbound") -> lc_pb2.FilterChain:
        found = self.chains(name, listener)
        assert len(found) == 1, [c.name for c in self.listeners[listener].filter_chains]
        return found[0]

    def port_chain_names(self, listener: str = "virtualInbound") -> list[str]:
        return [c.name for c in self.listeners[listener].filter_chains if c.filter_chain_match.HasField(
            "destination_port") and c.filter_chain_match.destination_port.value != 15006]


def build(*objects: Any, sidecar_obj: IstioSidecar | None = None, metadata: Mapping[str, str] | None = None,
          mesh: MeshConfig | None = None, pod_name: str = "reviews-1", ns: str = NS, ip: str = POD_IP,
          memo: Memo | None = None) -> Result:
    """build_inbound for one proxy; the Sidecar is the one sidecar_for picks unless given."""
    objs = list(objects) + ([mesh] if mesh is not None else [])
    if sidecar_obj is not None:
        objs.append(sidecar_obj)
    view = StoreView.build(1, objs)
    md = {"INSTANCE_IPS": ip, "NAMESPACE": ns, **(metadata or {})}
    proxy = proxy_from_node(f"sidecar~{ip}~{pod_name}.{ns}~{ns}.svc.cluster.local", md)
    workload = workload_of(view, proxy)
    return Result(build_inbound(view, workload, sidecar_for(view, workload), memo if memo is not None else Memo()))


# ------------------------------------------------------------------ decoding
def hcm(chain: lc_pb2.FilterChain) -> hcm_pb2.HttpConnectionManager:
    out = hcm_pb2.HttpConnectionManager()
    assert [f.name for f in chain.filters] == ["envoy.filters.network.http_connection_manager"]
    chain.filters[0].typed_config.Unpack(out)
    return out


def tcp(chain: lc_pb2.FilterChain) -> tcp_proxy_pb2.TcpProxy:
    out = tcp_proxy_pb2.TcpProxy()
    assert [f.name for f in chain.filters] == ["envoy.filters.network.tcp_proxy"]
    chain.filters[0].typed_config.Unpack(out)
    return out


def tls_context(chain: lc_pb2.FilterChain) -> tls_pb2.DownstreamTlsContext:
    out = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.Unpack(out)
    return out


def http_options(cluster: cluster_pb2.Cluster) -> hpo_pb2.HttpProtocolOptions | None:
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    if key not in cluster.typed_extension_protocol_options:
        return None
    out = hpo_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[key].Unpack(out)
    return out


def endpoint_address(cluster: cluster_pb2.Cluster) -> str:
    """`ip:port` or `unix:path` of a STATIC cluster's single endpoint."""
    (locality,) = cluster.load_assignment.endpoints
    (lb,) = locality.lb_endpoints
    addr = lb.endpoint.address
    if addr.HasField("pipe"):
        return f"unix:{addr.pipe.path}"
    return f"{addr.socket_address.address}:{addr.socket_address.port_value}"


def listener_filter_names(listener: listener_pb2.Listener) -> list[str]:
    return [f.name for f in listener.listener_filters]


# ------------------------------------------------------------------ envoy --mode validate
ENVOY = Path(envoy_wheel.__file__).parent / "_bin" / "envoy"
# What the outbound side emits and inbound chains reference (only their names matter here).
FIXED_CLUSTERS: list[dict[str, Any]] = [
    {"name": "InboundPassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
     "connect_timeout": "10s"},
    {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"},
]


def bootstrap(parts: InboundParts, admin_port: int = 0) -> dict[str, Any]:
    """A static bootstrap with every produced listener and cluster plus the fixed ones they use."""
    def as_dict(msg: Any) -> dict[str, Any]:
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)

    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [as_dict(listener_pb2.Listener.FromString(b.payload)) for b in parts.listeners],
            "clusters": [as_dict(cluster_pb2.Cluster.FromString(b.payload)) for b in parts.clusters]
            + FIXED_CLUSTERS,
        },
    }


def envoy_validate(parts: InboundParts) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(json.dumps(bootstrap(parts)))
        return subprocess.run(
            [str(ENVOY), "--mode", "validate", "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
             "-l", "error"],
            capture_output=True, text=True, timeout=60, check=False)


def assert_envoy_accepts(parts: InboundParts) -> None:
    assert parts.listeners or parts.clusters
    done = envoy_validate(parts)
    assert done.returncode == 0, done.stdout + done.stderr
