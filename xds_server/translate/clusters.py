"""CDS: the fixed clusters (BlackHole, Passthrough, InboundPassthrough) and, per imported service
port, the outbound cluster plus one per DestinationRule subset (istiod's
`pilot/pkg/networking/core/cluster.go` buildOutboundClusters, `cluster_builder.go`
applyDestinationRule, buildSubsetCluster).

Each cluster is described by a frozen `OutboundClusterSpec` holding exactly what its bytes
depend on (the DestinationRule policy resolved for its port and subset, serialized); the spec is
the memo key, so a cluster is built and serialized once for every proxy and every store
generation in which it does not change. No transport_socket_matches: the server speaks
plaintext between sidecars (no auto-mTLS), and no istio.metadata_exchange filter (an
istio-proxy extension upstream Envoy does not have).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import protocol
from xds_server.config.mesh import MeshConfig
from xds_server.config.protocol import Protocol
from xds_server.config.refs import FrozenDict
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.destination_rules import MergedDestinationRule, traffic_policy_for
from xds_server.mesh.scope import ProxyTraits, Scope
from xds_server.mesh.services import Endpoint, Port, Resolution, ServiceModel, endpoints_of
from xds_server.resources import Built, TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import cluster_policy, connection_pool, envoy
from xds_server.translate.endpoints import subset_service

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
    subset: str = ""
    # The DestinationRule TrafficPolicy resolved for this port and subset, serialized (b"": none),
    # and the rule's `istio.config` path ("" when no rule applies).
    policy: bytes = b""
    rule_config: str = ""
    # A ServiceEntry's subjectAltNames: what its TLS origination verifies when the rule names none.
    service_sans: tuple[str, ...] = ()

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
PlanEntry = tuple[ServiceModel | None, Port, "OutboundClusterSpec"]
"""A cluster to send, with the service (narrowed to a subset's endpoints) its EDS assignment
reads: None when no endpoint can ever match the subset (the assignment is empty)."""


def _resolve_policy(rule: MergedDestinationRule, port: int, subset: str) -> tuple[pb.TrafficPolicy | None, bytes]:
    policy = traffic_policy_for(rule, port, subset)
    if policy is None:
        return None, b""
    if policy.port_level_settings:  # already applied for this port: not part of what the cluster reads
        trimmed = pb.TrafficPolicy()
        trimmed.CopyFrom(policy)
        del trimmed.port_level_settings[:]
        policy = trimmed
    return policy, policy.SerializeToString(deterministic=True)


def resolved_policy(rule: MergedDestinationRule, port: int, subset: str,
                    memo: Memo) -> tuple[pb.TrafficPolicy | None, bytes]:
    """The policy of cluster (port, subset) under `rule`, once per merged rule (shared by every scope)."""
    return memo.get(("dr-policy", rule, port, subset), _resolve_policy, rule, port, subset)


def _dns_inline(view: StoreView, svc: ServiceModel, port: Port, memo: Memo) -> tuple[Endpoint, ...]:
    inline = endpoints_of(view, svc, port, memo)
    if svc.resolution is Resolution.DNS_ROUND_ROBIN_LB:
        inline = inline[:1]
    return inline


def cluster_spec(view: StoreView, svc: ServiceModel, port: Port, traits: ProxyTraits,
                 memo: Memo, rule: MergedDestinationRule | None = None) -> OutboundClusterSpec | None:
    """What the cluster for one service port depends on; None when istiod emits no cluster."""
    if not svc.builds_config or port.protocol is Protocol.UDP:
        return None
    mesh = view.mesh
    inline: tuple[Endpoint, ...] = ()
    if svc.resolution in (Resolution.DNS_LB, Resolution.DNS_ROUND_ROBIN_LB):
        inline = _dns_inline(view, svc, port, memo)
        if not inline:
            return None  # a DNS cluster with zero endpoints is not emitted
    override = 0
    if svc.resolution is Resolution.PASSTHROUGH and not svc.is_kubernetes and isinstance(port.target_port, int):
        override = port.target_port
    policy, policy_bytes = resolved_policy(rule, port.number, "", memo) if rule is not None else (None, b"")
    resolution, inline, service_sans = _policy_facts(svc, policy, svc.resolution, inline)
    return OutboundClusterSpec(
        name=names.outbound_cluster(port.number, svc.hostname),
        hostname=svc.hostname,
        service_name=svc.name if svc.is_kubernetes else svc.hostname,
        namespace=svc.namespace,
        protocol=port.protocol,
        resolution=resolution,
        mesh_external=svc.mesh_external,
        connect_timeout_s=mesh.connect_timeout_s,
        dns_refresh_s=mesh.dns_refresh_rate_s,
        dns_v6=traits.ipv6_only,
        logical_dns=svc.logical_dns,
        port_override=override,
        inline_endpoints=inline,
        policy=policy_bytes,
        rule_config=cluster_policy.rule_config_path(rule.sources[0]) if rule is not None else "",
        service_sans=service_sans,
    )


def _policy_facts(svc: ServiceModel, policy: pb.TrafficPolicy | None, resolution: Resolution,
                  inline: tuple[Endpoint, ...]) -> tuple[Resolution, tuple[Endpoint, ...], tuple[str, ...]]:
    """What a cluster's resolved policy changes in its spec: a PASSTHROUGH load balancer makes it
    ORIGINAL_DST without endpoints (istiod applyLoadBalancer), and with a `tls` block the
    service's subjectAltNames are the SANs to verify when the block names none."""
    if cluster_policy.is_passthrough(policy):
        resolution, inline = Resolution.PASSTHROUGH, ()
    return resolution, inline, svc.subject_alt_names if policy is not None and policy.HasField("tls") else ()


def subset_entry(view: StoreView, svc: ServiceModel, narrowed: ServiceModel | None, port: Port,
                 parent: OutboundClusterSpec, rule: MergedDestinationRule, subset: pb.Subset,
                 memo: Memo) -> PlanEntry | None:
    """The cluster of one subset on one port (istiod buildSubsetCluster): the parent's kind, the
    subset's merged policy. EDS: its own assignment of the endpoints whose labels include the
    subset's (empty when none: 503 UH). DNS: those endpoints inline, and no cluster when there are
    none. PASSTHROUGH (the parent's type, or the policy's load balancer): ORIGINAL_DST.
    `narrowed`: `svc` narrowed to the subset's labels (translate/endpoints.py subset_service)."""
    policy, policy_bytes = resolved_policy(rule, port.number, subset.name, memo)
    own = subset.traffic_policy if subset.HasField("traffic_policy") else None
    resolution = parent.resolution
    inline: tuple[Endpoint, ...] = ()
    if resolution in (Resolution.DNS_LB, Resolution.DNS_ROUND_ROBIN_LB) and not cluster_policy.is_passthrough(own):
        # istiod filters before applying the policy: only the subset's own PASSTHROUGH skips this.
        inline = _dns_inline(view, narrowed, port, memo) if narrowed is not None else ()
        if not inline:
            return None
    resolution, inline, service_sans = _policy_facts(svc, policy, resolution, inline)
    # The parent's facts (kind, DNS settings, port override, rule), with the subset's own name,
    # endpoints and merged policy.
    spec = replace(
        parent,
        name=names.outbound_cluster(port.number, svc.hostname, subset.name),
        resolution=resolution,
        inline_endpoints=inline,
        subset=subset.name,
        policy=policy_bytes,
        service_sans=service_sans,
    )
    return narrowed, port, spec


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
    if spec.rule_config:
        md.update({"config": spec.rule_config})
    if spec.subset:
        md.update({"subset": spec.subset})
    return md


def build_outbound_cluster(spec: OutboundClusterSpec) -> Built:
    cluster = Cluster(name=spec.name)
    refs: tuple[str, ...] = ()
    if spec.resolution is Resolution.CLIENT_SIDE_LB:
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.service_name = spec.name
        cluster.eds_cluster_config.eds_config.CopyFrom(envoy.ads_source())
        refs = (spec.name,)
    elif spec.resolution is Resolution.PASSTHROUGH:
        cluster.type = Cluster.ORIGINAL_DST
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
    http_opts = None
    if protocol.is_h2(spec.protocol):
        http_opts = connection_pool.h2_options(http_opts)
    elif protocol.is_auto(spec.protocol):
        http_opts = connection_pool.use_downstream_protocol(http_opts)
    policy = pb.TrafficPolicy.FromString(spec.policy) if spec.policy else None
    http_opts = cluster_policy.apply_traffic_policy(cluster, http_opts, policy, port_protocol=spec.protocol,
                                                    connect_timeout_s=spec.connect_timeout_s,
                                                    service_sans=spec.service_sans)
    connection_pool.finish_http_options(cluster, http_opts)
    cluster.metadata.filter_metadata["istio"].CopyFrom(_istio_metadata(spec))
    return Built.of(TypeUrl.CLUSTER, spec.name, cluster, refs=refs)


def outbound_cluster_specs(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo) -> list[PlanEntry]:
    """Every outbound cluster of the scope: per service port the default cluster, then its subsets."""
    out: list[PlanEntry] = []
    for svc in scope.services:
        rule = scope.destination_rule(svc.hostname, svc.namespace, traits)
        # Each subset's endpoints, whatever the port.
        subsets = [(subset, subset_service(svc, FrozenDict(subset.labels)))
                   for subset in rule.spec.subsets] if rule is not None else []
        for port in svc.ports:
            spec = cluster_spec(view, svc, port, traits, memo, rule)
            if spec is None:
                continue
            out.append((svc, port, spec))
            if rule is not None:
                for subset, narrowed in subsets:
                    entry = subset_entry(view, svc, narrowed, port, spec, rule, subset, memo)
                    if entry is not None:
                        out.append(entry)
    return out


def outbound_clusters(specs: list[PlanEntry], memo: Memo) -> list[Built]:
    return [memo.get(("cds", spec), build_outbound_cluster, spec) for _, _, spec in specs]
