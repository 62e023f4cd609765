"""CDS: the fixed clusters (BlackHole, Passthrough, InboundPassthrough) and one outbound cluster per
imported service port (istiod's `pilot/pkg/networking/core/cluster.go`, `cluster_builder.go`).

Each cluster is described by a frozen `OutboundClusterSpec` holding exactly what its bytes
depend on; the spec is the memo key, so a cluster is built and serialized once for every proxy
and every store generation in which it does not change. No transport_socket_matches: the
server speaks plaintext (no auto-mTLS), and no istio.metadata_exchange filter (an istio-proxy
extension upstream Envoy does not have).
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from xds_server.config import protocol
from xds_server.config.mesh import MeshConfig
from xds_server.config.protocol import Protocol
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.scope import ProxyTraits, Scope
from xds_server.mesh.services import Endpoint, Port, Resolution, ServiceModel, endpoints_of
from xds_server.resources import Built, TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import envoy

Cluster = cluster_pb2.Cluster
PASSTHROUGH_IDLE_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class OutboundClusterSpec:
    name: str
    hostname: str
    service_name: str
    namespace: str
    protocol: Protocol
    resolution: Resolution
    mesh_external: bool
    connect_timeout_s: float
    dns_refresh_s: float = 60.0
    dns_v6: bool = False
    logical_dns: bool = False
    port_override: int = 0  # ORIGINAL_DST upstream_port_override (ServiceEntry NONE targetPort)
    inline_endpoints: tuple[Endpoint, ...] = ()  # DNS clusters

    @property
    def is_eds(self) -> bool:
        return self.resolution is Resolution.CLIENT_SIDE_LB


# ------------------------------------------------------------------ fixed clusters
def _blackhole(connect_timeout_s: float) -> Built:
    cluster = Cluster(name=names.BLACKHOLE_CLUSTER, type=Cluster.STATIC,
                      connect_timeout=envoy.duration(connect_timeout_s))
    return Built.of(TypeUrl.CLUSTER, cluster.name, cluster)


def _passthrough(name: str, connect_timeout_s: float, bind_ip: str) -> Built:
    cluster = Cluster(
        name=name,
        type=Cluster.ORIGINAL_DST,
        lb_policy=Cluster.CLUSTER_PROVIDED,
        connect_timeout=envoy.duration(connect_timeout_s),
        circuit_breakers=envoy.max_circuit_breakers(),
    )
    envoy.set_http_protocol_options(cluster, envoy.http_protocol_options(
        use_downstream=True, idle_timeout_s=PASSTHROUGH_IDLE_TIMEOUT_S))
    if bind_ip:
        cluster.upstream_bind_config.CopyFrom(envoy.upstream_bind(bind_ip))
    return Built.of(TypeUrl.CLUSTER, name, cluster)


def fixed_clusters(mesh: MeshConfig, traits: ProxyTraits, memo: Memo) -> list[Built]:
    """BlackHoleCluster, PassthroughCluster, InboundPassthroughCluster (always sent to sidecars)."""
    timeout = mesh.connect_timeout_s
    inbound_bind = envoy.INBOUND_PASSTHROUGH_BIND_V6 if traits.ipv6_only else envoy.INBOUND_PASSTHROUGH_BIND_V4
    return [
        memo.get(("cds-fixed", names.BLACKHOLE_CLUSTER, timeout), _blackhole, timeout),
        memo.get(("cds-fixed", names.PASSTHROUGH_CLUSTER, timeout), _passthrough,
                 names.PASSTHROUGH_CLUSTER, timeout, ""),
        memo.get(("cds-fixed", names.INBOUND_PASSTHROUGH_CLUSTER, timeout, inbound_bind), _passthrough,
                 names.INBOUND_PASSTHROUGH_CLUSTER, timeout, inbound_bind),
    ]


# ------------------------------------------------------------------ outbound clusters
def cluster_spec(view: StoreView, svc: ServiceModel, port: Port, traits: ProxyTraits,
                 memo: Memo) -> OutboundClusterSpec | None:
    """What the cluster for one service port depends on; None when istiod emits no cluster."""
    if not svc.builds_config or port.protocol is Protocol.UDP:
        return None
    mesh = view.mesh
    inline: tuple[Endpoint, ...] = ()
    if svc.resolution in (Resolution.DNS_LB, Resolution.DNS_ROUND_ROBIN_LB):
        inline = endpoints_of(view, svc, port, memo)
        if not inline:
            return None  # a DNS cluster with zero endpoints is not emitted
        if svc.resolution is Resolution.DNS_ROUND_ROBIN_LB:
            inline = inline[:1]
    override = 0
    if svc.resolution is Resolution.PASSTHROUGH and not svc.is_kubernetes and isinstance(port.target_port, int):
        override = port.target_port
    return OutboundClusterSpec(
        name=names.outbound_cluster(port.number, svc.hostname),
        hostname=svc.hostname,
        service_name=svc.name if svc.is_kubernetes else svc.hostname,
        namespace=svc.namespace,
        protocol=port.protocol,
        resolution=svc.resolution,
        mesh_external=svc.mesh_external,
        connect_timeout_s=mesh.connect_timeout_s,
        dns_refresh_s=mesh.dns_refresh_rate_s,
        dns_v6=traits.ipv6_only,
        logical_dns=svc.logical_dns,
        port_override=override,
        inline_endpoints=inline,
    )


def _lb_endpoint(ep: Endpoint) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=envoy.bind_address(ep.address, ep.port)),
        load_balancing_weight=envoy.u32(ep.weight),
    )


def _istio_metadata(spec: OutboundClusterSpec) -> struct_pb2.Struct:
    md = struct_pb2.Struct()
    md.update({"services": [{"host": spec.hostname, "name": spec.service_name, "namespace": spec.namespace}]})
    if spec.mesh_external:
        md.update({"external": True})
    return md


def build_outbound_cluster(spec: OutboundClusterSpec) -> Built:
    cluster = Cluster(
        name=spec.name,
        connect_timeout=envoy.duration(spec.connect_timeout_s),
        lb_policy=Cluster.LEAST_REQUEST,
        circuit_breakers=envoy.max_circuit_breakers(),
    )
    refs: tuple[str, ...] = ()
    if spec.resolution is Resolution.CLIENT_SIDE_LB:
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.service_name = spec.name
        cluster.eds_cluster_config.eds_config.CopyFrom(envoy.ads_source())
        refs = (spec.name,)
    elif spec.resolution is Resolution.PASSTHROUGH:
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        if spec.port_override:
            cluster.original_dst_lb_config.upstream_port_override.value = spec.port_override
    else:
        logical = spec.resolution is Resolution.DNS_ROUND_ROBIN_LB or spec.logical_dns
        cluster.type = Cluster.LOGICAL_DNS if logical else Cluster.STRICT_DNS
        cluster.dns_lookup_family = Cluster.V6_ONLY if spec.dns_v6 else Cluster.V4_ONLY
        cluster.dns_refresh_rate.CopyFrom(envoy.duration(spec.dns_refresh_s))
        cluster.respect_dns_ttl = True
        cluster.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(
            cluster_name=spec.name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[_lb_endpoint(ep) for ep in spec.inline_endpoints])],
        ))
    if protocol.is_h2(spec.protocol):
        envoy.set_http_protocol_options(cluster, envoy.http_protocol_options(h2=True))
    elif protocol.is_auto(spec.protocol):
        envoy.set_http_protocol_options(cluster, envoy.http_protocol_options(use_downstream=True))
    cluster.metadata.filter_metadata["istio"].CopyFrom(_istio_metadata(spec))
    return Built.of(TypeUrl.CLUSTER, spec.name, cluster, refs=refs)


def outbound_cluster_specs(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo,
                           ) -> list[tuple[ServiceModel, Port, OutboundClusterSpec]]:
    out = []
    for svc in scope.services:
        for port in svc.ports:
            spec = cluster_spec(view, svc, port, traits, memo)
            if spec is not None:
                out.append((svc, port, spec))
    return out


def outbound_clusters(specs: list[tuple[ServiceModel, Port, OutboundClusterSpec]], memo: Memo) -> list[Built]:
    return [memo.get(("cds", spec), build_outbound_cluster, spec) for _, _, spec in specs]
