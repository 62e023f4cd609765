"""EDS: one ClusterLoadAssignment per EDS cluster, keyed by (cluster name, endpoints).

A pod becoming ready changes the endpoint tuple of the clusters whose services select it and
nothing else, so exactly those assignments are rebuilt; every proxy importing the service
shares the new Built. Istio-only endpoint metadata (tlsMode, istio.workload) is omitted.

A DestinationRule subset's cluster holds the endpoints whose labels include the subset's labels
(istiod's `pilot/pkg/xds/endpoints/endpoint_builder.go` subset filtering): `subset_service` is the
service narrowed to them, so its endpoints come from the same memoised lookup as any service's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xds_server.config.refs import FrozenDict
from xds_server.memo import Memo
from xds_server.mesh.services import Endpoint, ServiceModel
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



def subset_service(svc: ServiceModel, labels: Mapping[str, str]) -> ServiceModel | None:
    """`svc` narrowed to the endpoints whose labels include `labels`; None when none ever can.

    Pods (a Service selector, a ServiceEntry workloadSelector): the selector with the labels added,
    which selects exactly those pods (a label the selector pins to another value: none).
    ServiceEntry endpoints: those carrying the labels. A DNS ServiceEntry without endpoints
    resolves its host, an endpoint without labels (istiod's serviceentry conversion).
    """
    if not labels:
        return svc
    if svc.static_endpoints:
        kept = tuple(ep for ep in svc.static_endpoints if all(ep.labels.get(k) == v for k, v in labels.items()))
        return replace(svc, static_endpoints=kept) if kept else None
    if svc.selector is not None and (svc.selector or not svc.is_kubernetes):
        if any(svc.selector.get(k, v) != v for k, v in labels.items()):
            return None
        return replace(svc, selector=FrozenDict({**svc.selector, **labels}))
    return None
