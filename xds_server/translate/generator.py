"""generate(view, proxy, memo) -> ProxySnapshot: the translator's single entry point.

1. Resolve the proxy to its workload and the Sidecar that applies (workload.py).
2. Get the shared Scope of (namespace, Sidecar) for this store generation (scope.py).
3. Get the shared outbound resources of (Scope, proxy traits): every proxy with the same scope
   and traits receives the very same dicts of Builts (DESIGN principle 2).
4. Add the pod-specific inbound parts (inbound.py) and the fixed clusters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from xds_server.model import IstioSidecar
from xds_server.resources import Built, ProxySnapshot, ResourceMap, TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import clusters, endpoints, envoy, listeners_outbound, routes
from xds_server.translate.inbound import build_inbound
from xds_server.translate.memo import Memo
from xds_server.translate.proxy import Proxy
from xds_server.translate.scope import ProxyTraits, Scope, scope_for
from xds_server.translate.workload import Workload, sidecar_for, workload_of

Resources = ResourceMap


@dataclass(frozen=True, slots=True, eq=False)
class Outbound:
    """The outbound half of a snapshot, shared by every proxy of one scope and traits.

    Kept across store generations per type: a mapping whose entries are all the same Built
    objects as last time is the very same mapping object, so proxies, snapshots and streams see
    at once (by identity) which types did not change.
    """

    clusters: Resources
    endpoints: Resources
    listeners: Resources
    routes: Resources


def _by_name(items: Iterable[Built]) -> Resources:
    return ResourceMap(items)


def _same(old: Resources, new: Resources) -> Resources:
    """`old` when `new` holds exactly the same Built objects (so its identity carries over)."""
    if len(old) != len(new):
        return new
    get = old.get
    for name, built in new.items():
        if get(name) is not built:
            return new
    return old


def _stable(fresh: Outbound, last: Outbound | None) -> Outbound:
    if last is None:
        return fresh
    kept = Outbound(_same(last.clusters, fresh.clusters), _same(last.endpoints, fresh.endpoints),
                    _same(last.listeners, fresh.listeners), _same(last.routes, fresh.routes))
    if (kept.clusters is last.clusters and kept.endpoints is last.endpoints and kept.listeners is last.listeners
            and kept.routes is last.routes):
        return last
    return kept


def traits_of(workload: Workload) -> ProxyTraits:
    proxy = workload.proxy
    ips = workload.ips
    return ProxyTraits(
        interception=proxy.interception_mode,
        ipv6_only=bool(ips) and all(envoy.is_ipv6(ip) for ip in ips),
        unprivileged=proxy.unprivileged,
        dns_domain=proxy.dns_domain,
    )


def build_outbound(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo) -> Outbound:
    specs = clusters.outbound_cluster_specs(view, scope, traits, memo)
    cds = [*clusters.fixed_clusters(view.mesh, traits, memo), *clusters.outbound_clusters(specs, memo)]
    eds = endpoints.outbound_load_assignments(view, specs, memo)
    lds = _listeners(view, scope, traits, memo)
    listeners = list(lds.listeners)
    if traits.capture:
        listeners.append(listeners_outbound.virtual_outbound(scope, traits, memo))
    rds = [routes.outbound_route(scope, traits, name, memo) for name in lds.routes]
    fresh = Outbound(_by_name(cds), _by_name(eds), _by_name(listeners), _by_name(rds))
    # The same (namespace, Sidecar, traits) in the previous generation: keep what did not change.
    key = ("outbound-last", scope.namespace, scope.sidecar, traits)
    out = _stable(fresh, memo.recall(key))
    memo.put(key, out)
    return out


def outbound_for(view: StoreView, scope: Scope, traits: ProxyTraits, self_ip: str, memo: Memo) -> Outbound:
    """Shared outbound resources; a proxy that is itself a headless endpoint gets its own variant."""
    shared = memo.get(("outbound", scope, traits), build_outbound, view, scope, traits, memo)
    if self_ip and self_ip in _listeners(view, scope, traits, memo).headless_ips:
        own = replace(traits, self_ip=self_ip)
        return memo.get(("outbound", scope, own), build_outbound, view, scope, own, memo)
    return shared


def _listeners(view: StoreView, scope: Scope, traits: ProxyTraits,
               memo: Memo) -> listeners_outbound.OutboundListeners:
    return memo.get(("outbound-lds", scope, traits), listeners_outbound.build_outbound_listeners,
                    view, scope, traits, memo)


def _merge(shared: Resources, extra: tuple[Built, ...], memo: Memo) -> Resources:
    """Shared outbound entries plus a proxy's own, one mapping per distinct pair (kept across pushes)."""
    return memo.get(("merged", shared.token, extra), ResourceMap.layered, shared, extra)


def _snapshot(outbound: Outbound, inbound_clusters: tuple[Built, ...],
              inbound_listeners: tuple[Built, ...], memo: Memo) -> ProxySnapshot:
    return ProxySnapshot({
        TypeUrl.CLUSTER: _merge(outbound.clusters, inbound_clusters, memo),
        TypeUrl.ENDPOINT: outbound.endpoints,
        TypeUrl.LISTENER: _merge(outbound.listeners, inbound_listeners, memo),
        TypeUrl.ROUTE: outbound.routes,
    })


def scope_of(view: StoreView, proxy: Proxy, memo: Memo) -> tuple[Workload, IstioSidecar | None, Scope]:
    workload = workload_of(view, proxy)
    sidecar = sidecar_for(view, workload)
    return workload, sidecar, scope_for(view, proxy.namespace, sidecar, memo)


def generate(view: StoreView, proxy: Proxy, memo: Memo) -> ProxySnapshot:
    workload, sidecar, scope = scope_of(view, proxy, memo)
    traits = traits_of(workload)
    self_ip = workload.ips[0] if workload.ips else ""
    outbound = outbound_for(view, scope, traits, self_ip, memo)
    inbound = build_inbound(view, workload, sidecar, memo, domain_suffix=view.domain_suffix)
    # Builts are shared objects, so proxies with equal inbound parts share one snapshot too.
    ic, il = tuple(inbound.clusters), tuple(inbound.listeners)
    return memo.get(("snapshot", outbound, ic, il), _snapshot, outbound, ic, il, memo)


def route_for_name(view: StoreView, proxy: Proxy, name: str, memo: Memo) -> Built:
    """Any RDS name Envoy asks for: the scope's route, or istiod's empty answer for unknown names.

    generate() already holds every route its listeners reference; this answers names outside it
    (a listener from an older push, a hand-written bootstrap) so that no request goes unanswered.
    """
    workload, _, scope = scope_of(view, proxy, memo)
    return routes.outbound_route(scope, traits_of(workload), name, memo)
