"""Which workload a proxy is, and which Sidecar applies to it (istio push_context.go rules).

1. the oldest Sidecar in the proxy's namespace whose workloadSelector matches its labels
   (a present-but-empty selector matches everything, still ahead of selector-less ones);
2. else the oldest selector-less Sidecar in the namespace;
3. else the selector-less Sidecar of the root namespace (re-evaluated in the proxy's namespace);
4. else none: the implicit default (egress */*, no ingress, MeshConfig outbound policy).
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_server.config import IstioSidecar, Pod
from xds_server.config.refs import EMPTY, FrozenDict
from xds_server.mesh.proxy import Proxy
from xds_server.store.view import StoreView


@dataclass(frozen=True, slots=True)
class Workload:
    """The proxy resolved against the store: its Pod (if known), labels and addresses."""

    proxy: Proxy
    pod: Pod | None
    labels: FrozenDict
    ips: tuple[str, ...]

    @property
    def namespace(self) -> str:
        return self.proxy.namespace


def workload_of(view: StoreView, proxy: Proxy) -> Workload:
    """Look the Pod up by namespace/name, falling back to its IP; else use node metadata."""
    pod = view.pod(proxy.namespace, proxy.pod_name) if proxy.pod_name else None
    if pod is None:
        for ip in (*proxy.instance_ips, proxy.ip):
            candidate = view.pod_by_ip(ip) if ip else None
            if candidate is not None and candidate.meta.namespace == proxy.namespace:
                pod = candidate
                break
    if pod is not None:
        ips = proxy.instance_ips or pod.ips
        return Workload(proxy, pod, pod.meta.labels or EMPTY, ips)
    return Workload(proxy, None, proxy.labels, proxy.instance_ips)


def _has_selector(sc: IstioSidecar) -> bool:
    return sc.spec.HasField("workload_selector")


def _selects(sc: IstioSidecar, labels: FrozenDict) -> bool:
    wanted = sc.spec.workload_selector.labels
    return all(labels.get(k) == v for k, v in wanted.items())


def sidecar_for(view: StoreView, workload: Workload) -> IstioSidecar | None:
    """The Sidecar that applies to this workload, or None for the implicit default."""
    ns = workload.namespace
    in_ns = view.sidecars_in(ns)  # oldest first
    for sc in in_ns:
        if _has_selector(sc) and _selects(sc, workload.labels):
            return sc
    for sc in in_ns:
        if not _has_selector(sc):
            return sc
    root = view.mesh.root_namespace
    if root != ns:
        for sc in view.sidecars_in(root):
            if not _has_selector(sc):
                return sc
    return None
