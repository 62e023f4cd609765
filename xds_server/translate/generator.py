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

from xds_server.model import IstioSidecar, Kind, ObjectRef
from xds_server.resources import Built, ProxySnapshot, ResourceMap, TypeUrl
from xds_server.store.view import ChangeSet, StoreView
from xds_server.translate import clusters, endpoints, envoy, listeners_outbound, routes
from xds_server.translate.inbound import build_inbound
from xds_server.translate.memo import Memo
from xds_server.translate.proxy import Proxy
from xds_server.translate.scope import ProxyTraits, Scope, scope_for
from xds_server.translate.services import Endpoint, Port, ServiceModel, endpoints_of
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
    return _plan(view, scope, traits, memo).outbound


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    """The outbound resources of one (scope, traits) at one generation, and what they read.

    Besides the scope and the traits, outbound config reads the store in two ways only: the
    MeshConfig and service endpoints. `reads` holds the endpoints the clusters and listeners were
    built from (DNS clusters' inline hosts, headless listeners); `eds` the EDS clusters. The next
    generation, with the same scope, re-reads only endpoints of namespaces whose Pods changed:
    unchanged clusters, listeners and routes are kept without being looked at.
    """

    outbound: Outbound
    headless_ips: frozenset[str]
    generation: int
    mesh: object
    reads: tuple[tuple[ServiceModel, Port, tuple[Endpoint, ...]], ...]
    eds: tuple[tuple[ServiceModel, Port, str], ...]  # (service, port, cluster name)


def _plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo) -> _Plan:
    return memo.get(("outbound", view, scope, traits), _build_plan, view, scope, traits, memo)


def _build_plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo) -> _Plan:
    key = ("outbound-plan", scope, traits)
    last = memo.recall(key)
    plan = _carry_over(view, last, memo) if last is not None else None
    if plan is None:
        plan = _full_plan(view, scope, traits, memo)
    memo.put(key, plan)
    memo.put(("outbound-last", scope.namespace, scope.sidecar, traits), plan.outbound)
    return plan


def _full_plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo) -> _Plan:
    with memo.recording() as reads:
        specs = clusters.outbound_cluster_specs(view, scope, traits, memo)
        cds = [*clusters.fixed_clusters(view.mesh, traits, memo), *clusters.outbound_clusters(specs, memo)]
        lds = listeners_outbound.build_outbound_listeners(view, scope, traits, memo)
    eds_specs = [(svc, port, spec) for svc, port, spec in specs if spec.is_eds]
    eds = endpoints.outbound_load_assignments(view, eds_specs, memo)
    listeners = list(lds.listeners)
    if traits.capture:
        listeners.append(listeners_outbound.virtual_outbound(scope, traits, memo))
    rds = [routes.outbound_route(scope, traits, name, memo) for name in lds.routes]
    fresh = Outbound(_by_name(cds), _by_name(eds), _by_name(listeners), _by_name(rds))
    # The same (namespace, Sidecar, traits) in the previous generation: keep what did not change.
    out = _stable(fresh, memo.recall(("outbound-last", scope.namespace, scope.sidecar, traits)))
    return _Plan(out, lds.headless_ips, view.generation, view.mesh, tuple(reads),
                 tuple((svc, port, spec.name) for svc, port, spec in eds_specs))


def _carry_over(view: StoreView, last: _Plan, memo: Memo) -> _Plan | None:
    """`last` (same scope and traits) brought to this generation, or None when it must be rebuilt."""
    if last.generation == view.generation:
        return last
    changes = view.changes_since(last.generation)
    if changes is None or last.mesh != view.mesh:
        return None
    touched = changes.namespaces(Kind.POD)  # endpoints elsewhere are what they were
    if not touched:
        return _Plan(last.outbound, last.headless_ips, view.generation, view.mesh, last.reads, last.eds)
    for svc, port, eps in last.reads:
        if svc.namespace in touched and endpoints_of(view, svc, port, memo) != eps:
            return None  # a DNS cluster or a headless listener changes with them
    old = last.outbound.endpoints
    fresh: list[Built] = []
    differs = False
    for svc, port, name in last.eds:
        built = old[name]
        if svc.namespace in touched:
            new = endpoints.load_assignment(name, endpoints_of(view, svc, port, memo), memo)
            differs = differs or new is not built
            built = new
        fresh.append(built)
    outbound = replace(last.outbound, endpoints=_by_name(fresh)) if differs else last.outbound
    return _Plan(outbound, last.headless_ips, view.generation, view.mesh, last.reads, last.eds)


def outbound_for(view: StoreView, scope: Scope, traits: ProxyTraits, self_ip: str, memo: Memo) -> Outbound:
    """Shared outbound resources; a proxy that is itself a headless endpoint gets its own variant."""
    plan = _plan(view, scope, traits, memo)
    if self_ip and self_ip in plan.headless_ips:
        own = replace(traits, self_ip=self_ip)
        return _plan(view, scope, own, memo).outbound
    return plan.outbound


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


@dataclass(slots=True, eq=False)
class _ProxyParts:
    """What one proxy's snapshot takes from its own pod and namespace, as of `generation`."""

    proxy: Proxy
    generation: int
    workload: Workload
    sidecar: IstioSidecar | None
    by_name: bool  # the Pod was found by namespace/name (else by IP, or not at all)
    traits: ProxyTraits
    inbound_clusters: tuple[Built, ...]
    inbound_listeners: tuple[Built, ...]


def _touches(changes: ChangeSet, parts: _ProxyParts, root_namespace: str) -> bool:
    """Could these changes alter the proxy's workload, Sidecar choice or inbound config?

    Those read: its Pod (by name; by IP when the name finds none), the Services and
    ServiceEntries of its namespace, the Sidecars of its namespace and the root namespace, and
    the MeshConfig. Anything else (another kind, a Namespace) counts as touching.
    """
    ns = parts.proxy.namespace
    for kind, namespaces in changes.by_kind.items():
        if kind == Kind.POD:
            if not parts.by_name:
                return True
            if ns in namespaces and ObjectRef(Kind.POD, ns, parts.proxy.pod_name) in changes.refs:
                return True
        elif kind in (Kind.SERVICE, Kind.SERVICE_ENTRY):
            if ns in namespaces:
                return True
        elif kind == Kind.SIDECAR:
            if ns in namespaces or root_namespace in namespaces:
                return True
        else:
            return True
    return False


def _proxy_parts(view: StoreView, proxy: Proxy, memo: Memo) -> _ProxyParts:
    """The proxy's own parts, carried over from the last generation when no change touches them."""
    key = ("proxy", proxy.key)
    last: _ProxyParts | None = memo.recall(key)
    if last is not None and last.proxy is proxy:
        if last.generation == view.generation:
            memo.put(key, last)
            return last
        changes = view.changes_since(last.generation)
        if changes is not None and not _touches(changes, last, view.mesh.root_namespace):
            last.generation = view.generation  # still true at this generation
            memo.put(key, last)
            return last
    workload = workload_of(view, proxy)
    sidecar = sidecar_for(view, workload)
    inbound = build_inbound(view, workload, sidecar, memo, domain_suffix=view.domain_suffix)
    by_name = workload.pod is not None and workload.pod.meta.name == proxy.pod_name
    parts = _ProxyParts(proxy, view.generation, workload, sidecar, by_name, traits_of(workload),
                        tuple(inbound.clusters), tuple(inbound.listeners))
    memo.put(key, parts)
    return parts


@dataclass(slots=True, eq=False)
class _Generated:
    """A proxy's last snapshot and what it was made from (istiod's ProxyNeedsPush, by data)."""

    generation: int
    parts: _ProxyParts
    scope: Scope
    outbound: Outbound
    snapshot: ProxySnapshot


def _unaffected(view: StoreView, last: _Generated) -> bool:
    """Only Pods changed since, none of them the proxy's own nor in a namespace its scope imports."""
    changes = view.changes_since(last.generation)
    if changes is None or changes.kinds() - {Kind.POD}:
        return False
    return not (changes.namespaces(Kind.POD) & last.scope.namespaces) and \
        not _touches(changes, last.parts, view.mesh.root_namespace)


def generate(view: StoreView, proxy: Proxy, memo: Memo) -> ProxySnapshot:
    key = ("generated", proxy.key)
    last: _Generated | None = memo.recall(key)
    if last is not None and last.parts.proxy is proxy and _unaffected(view, last):
        # Endpoints elsewhere changed: this proxy's snapshot cannot have. Its own parts, its
        # scope and the scope's plan are carried to this generation (memo hits once per scope),
        # and the memo keeps what the snapshot is made of, so that the next change that does
        # touch them starts from here rather than from scratch.
        parts = last.parts
        parts.generation = view.generation
        memo.put(("proxy", proxy.key), parts)
        self_ip = parts.workload.ips[0] if parts.workload.ips else ""
        scope = scope_for(view, proxy.namespace, parts.sidecar, memo)
        if scope is last.scope and outbound_for(view, scope, parts.traits, self_ip, memo) is last.outbound:
            last.generation = view.generation
            memo.put(key, last)
            _remember(last, memo)
            return last.snapshot
    parts = _proxy_parts(view, proxy, memo)
    workload = parts.workload
    scope = scope_for(view, proxy.namespace, parts.sidecar, memo)
    self_ip = workload.ips[0] if workload.ips else ""
    outbound = outbound_for(view, scope, parts.traits, self_ip, memo)
    # Builts are shared objects, so proxies with equal inbound parts share one snapshot too.
    ic, il = parts.inbound_clusters, parts.inbound_listeners
    snapshot = memo.get(("snapshot", outbound, ic, il), _snapshot, outbound, ic, il, memo)
    memo.put(key, _Generated(view.generation, parts, scope, outbound, snapshot))
    return snapshot


def _remember(last: _Generated, memo: Memo) -> None:
    """Keep the memo entries a carried-over snapshot is made of (they would age out otherwise)."""
    out, parts, snap = last.outbound, last.parts, last.snapshot
    ic, il = parts.inbound_clusters, parts.inbound_listeners
    memo.put(("snapshot", out, ic, il), snap)
    memo.put(("merged", out.clusters.token, ic), snap.get(TypeUrl.CLUSTER))
    memo.put(("merged", out.listeners.token, il), snap.get(TypeUrl.LISTENER))


def route_for_name(view: StoreView, proxy: Proxy, name: str, memo: Memo) -> Built:
    """Any RDS name Envoy asks for: the scope's route, or istiod's empty answer for unknown names.

    generate() already holds every route its listeners reference; this answers names outside it
    (a listener from an older push, a hand-written bootstrap) so that no request goes unanswered.
    """
    workload, _, scope = scope_of(view, proxy, memo)
    return routes.outbound_route(scope, traits_of(workload), name, memo)
