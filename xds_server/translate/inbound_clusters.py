"""Inbound clusters `inbound|<port>||` (istiod's `cluster.go` buildInboundClustersFromServiceInstances
and buildInboundClustersFromSidecar, `cluster_builder.go` buildInboundCluster).

A cluster is fully described by an `InboundClusterSpec`, which is also its memo key: pods that
serve the same port the same way share one Built.

* no endpoint: ORIGINAL_DST back to the address the client dialled, bound to 127.0.0.6 (::6) so
  istio-iptables does not capture it again (its ISTIO_OUTPUT chain returns traffic from
  127.0.0.6: `tools/istio-iptables/pkg/capture/run.go`);
* an endpoint (127.0.0.1:P, [::1]:P, the instance IP, a unix socket): STATIC. Only loopback
  endpoints go without the 127.0.0.6 source bind, as in istiod (Envoy ignores it for pipes).
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from xds_server.config import protocol
from xds_server.config.protocol import Protocol
from xds_server.config.traffic import ConnectionPool
from xds_server.mesh import names
from xds_server.resources import Built, TypeUrl
from xds_server.translate import connection_pool, envoy

# istiod disables cleanup of inbound ORIGINAL_DST hosts with the longest interval Envoy accepts
# (it converts to int64 nanoseconds: (2^63 - 1 - 999999999) / 1e9 seconds, about 292 years).
MAX_CLEANUP_INTERVAL_S = 9223372035
LOOPBACKS = frozenset({"127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True)
class InboundClusterSpec:
    port: int  # the arriving port: names the cluster
    protocol: Protocol  # after TLS termination; picks the upstream HTTP version
    endpoint: str = ""  # "" ORIGINAL_DST, else an IP or `unix:///path`
    endpoint_port: int = 0
    upstream_bind: str = ""  # source address for non-loopback upstreams ("" none)
    pool: ConnectionPool | None = None  # None: defaults
    connect_timeout_s: float = 10.0
    # istio.services metadata: (host, name, namespace) of the services on this port.
    services: tuple[tuple[str, str, str], ...] = ()
    rule_config: str = ""  # istio.config: the DestinationRule whose policy applies ("" none)

    @property
    def name(self) -> str:
        return names.inbound_cluster(self.port)


def is_http_port(p: Protocol) -> bool:
    """Ports where HTTP pool settings and upstream HTTP options make sense (HTTP family or sniffed)."""
    return protocol.is_http(p) or protocol.is_auto(p)


def build_inbound_cluster(spec: InboundClusterSpec) -> Built:
    name = spec.name
    cluster = cluster_pb2.Cluster(name=name, alt_stat_name=f"{name};")
    cluster.common_lb_config.SetInParent()
    if spec.endpoint:
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.load_assignment.CopyFrom(endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                    address=envoy.bind_address(spec.endpoint, spec.endpoint_port)))])],
        ))
    else:
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        cluster.cleanup_interval.seconds = MAX_CLEANUP_INTERVAL_S

    http_opts = None
    if protocol.is_h2(spec.protocol):
        http_opts = connection_pool.h2_options(http_opts)
    elif protocol.is_auto(spec.protocol):
        http_opts = connection_pool.use_downstream_protocol(http_opts)
    http_opts = connection_pool.apply_connection_pool(
        cluster, http_opts, spec.pool, connect_timeout_s=spec.connect_timeout_s,
        http_port=is_http_port(spec.protocol))
    connection_pool.finish_http_options(cluster, http_opts)

    if spec.upstream_bind:
        cluster.upstream_bind_config.CopyFrom(envoy.upstream_bind(spec.upstream_bind))
    if spec.services:
        services = struct_pb2.ListValue()
        for host, svc_name, namespace in spec.services:
            services.add_struct().update({"host": host, "name": svc_name, "namespace": namespace})
        cluster.metadata.filter_metadata["istio"].fields["services"].list_value.CopyFrom(services)
    if spec.rule_config:
        cluster.metadata.filter_metadata["istio"].fields["config"].string_value = spec.rule_config
    return Built.of(TypeUrl.CLUSTER, name, cluster)
