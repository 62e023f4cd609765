"""EDS: one ClusterLoadAssignment per EDS cluster, keyed by (cluster name, endpoints).

A pod becoming ready changes the endpoint tuple of the clusters whose services select it and
nothing else, so exactly those assignments are rebuilt; every proxy importing the service
shares the new Built. Istio-only endpoint metadata (tlsMode, istio.workload) is omitted.
"""

from __future__ import annotations

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xds_server.memo import Memo
from xds_server.mesh.services import Endpoint
from xds_server.resources import Built, TypeUrl
from xds_server.translate import envoy


def build_load_assignment(cluster_name: str, eps: tuple[Endpoint, ...]) -> Built:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    if eps:
        cla.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=envoy.bind_address(ep.address, ep.port)),
                health_status=health_check_pb2.HEALTHY,
                load_balancing_weight=envoy.u32(ep.weight),
            )
            for ep in eps
        ]))
    return Built.of(TypeUrl.ENDPOINT, cluster_name, cla)


def load_assignment(cluster_name: str, eps: tuple[Endpoint, ...], memo: Memo) -> Built:
    return memo.get(("eds", cluster_name, eps), build_load_assignment, cluster_name, eps)

