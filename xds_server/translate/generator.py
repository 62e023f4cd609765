"""generate(view, proxy, memo) -> ProxySnapshot: the translator's single entry point.

1. Resolve the proxy to its workload and the Sidecar that applies (workload.py).
2. Get the shared Scope of (namespace, Sidecar) for this store generation (scope.py).
3. Get the shared outbound resources of (Scope, proxy traits): every proxy with the same scope
   and traits receives the very same dicts of Builts (DESIGN principle 2).
4. Add the pod-specific inbound parts (inbound.py) and the fixed clusters.

Across generations, each proxy's last snapshot and what it was made from is kept (ProxyIndex):
`reached(view, since)` tells the planner which proxies a change can touch at all (a Pod change:
those importing its namespace), and for those, work that the change leaves valid is carried
over (own parts, scope, outbound plan; a Pod change replaces one EDS mapping in the last snapshot).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from xds_server.config import IstioSidecar, Kind, ObjectRef
from xds_server.memo import Memo
from xds_server.mesh.proxy import Proxy
from xds_server.mesh.scope import ProxyTraits, Scope, scope_for
from xds_server.mesh.services import Endpoint, Port, ServiceModel, endpoints_of
from xds_server.mesh.workload import Workload, sidecar_for, workload_of
from xds_server.resources import Built, ProxySnapshot, ResourceMap, TypeUrl
from xds_server.store.view import ChangeSet, StoreView
from xds_server.translate import clusters, endpoints, envoy, listeners_outbound, routes
from xds_server.translate.inbound import build_inbound

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
    built from (DNS clusters' inline hosts, headless listeners); `eds` the EDS clusters by
    namespace, each with the endpoints its assignment holds. The next generation, with the same
    scope, re-reads only endpoints of namespaces whose Pods changed and rebuilds only assignments
    whose endpoints differ: unchanged clusters, listeners and routes are kept without being looked at.
    """

    scope: Scope
    traits: ProxyTraits
    outbound: Outbound
    headless_ips: frozenset[str]
    generation: int
    mesh: object
    reads: tuple[tuple[ServiceModel, Port, tuple[Endpoint, ...]], ...]
    eds: Mapping[str, tuple[_EdsInput, ...]]  # namespace -> its services' EDS clusters


_EdsInput = tuple[ServiceModel, Port, str, tuple[Endpoint, ...]]  # service, port, cluster name, endpoints


def _plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo, hint: _Plan | None = None) -> _Plan:
    return memo.get(("outbound", view, scope, traits), _build_plan, view, scope, traits, memo, hint)


def _build_plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo, hint: _Plan | None) -> _Plan:
    key = ("outbound-plan", scope, traits)
    last: _Plan | None = memo.recall(key)
    since = last.generation if last is not None else -1
    if hint is not None and hint.scope is scope and hint.traits == traits:
        # A live proxy's plan: valid up to the generation every unvisited proxy is settled at.
        hinted = max(hint.generation, proxy_index(memo).settled)
        if last is None or hinted > since:
            last, since = hint, hinted
    plan = _carry_over(view, last, since, memo) if last is not None else None
    if plan is None:
        plan = _full_plan(view, scope, traits, memo, hint.outbound if hint is not None else None)
    memo.put(key, plan)
    memo.put(("outbound-last", scope.namespace, scope.sidecar, traits), plan.outbound)
    return plan


def _full_plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo, previous: Outbound | None) -> _Plan:
    with memo.recording() as reads:
        specs = clusters.outbound_cluster_specs(view, scope, traits, memo)
        cds = [*clusters.fixed_clusters(view.mesh, traits, memo), *clusters.outbound_clusters(specs, memo)]
        lds = listeners_outbound.build_outbound_listeners(view, scope, traits, memo)
    # An assignment for every EDS cluster; empty when no endpoint is ready (503 UH, as istiod).
    by_ns: dict[str, list[_EdsInput]] = {}
    eds: list[Built] = []
    for svc, port, spec in specs:
        if spec.is_eds:
            eps = endpoints_of(view, svc, port, memo)
            by_ns.setdefault(svc.namespace, []).append((svc, port, spec.name, eps))
            eds.append(endpoints.load_assignment(spec.name, eps, memo))
    listeners = list(lds.listeners)
    if traits.capture:
        listeners.append(listeners_outbound.virtual_outbound(scope, traits, memo))
    rds = [routes.outbound_route(scope, traits, name, memo) for name in lds.routes]
    fresh = Outbound(_by_name(cds), _by_name(eds), _by_name(listeners), _by_name(rds))
    # The same (namespace, Sidecar, traits) in the previous generation: keep what did not change.
    last = memo.recall(("outbound-last", scope.namespace, scope.sidecar, traits))
    out = _stable(fresh, last if last is not None else previous)
    return _Plan(scope, traits, out, lds.headless_ips, view.generation, view.mesh, tuple(reads),
                 {ns: tuple(items) for ns, items in by_ns.items()})


def _carry_over(view: StoreView, last: _Plan, since: int, memo: Memo) -> _Plan | None:
    """`last` (same scope and traits, valid at `since`) brought to this generation, or None to rebuild."""
    if since == view.generation:
        return last
    changes = view.changes_since(since)
    if changes is None or last.mesh != view.mesh:
        return None
    touched = changes.namespaces(Kind.POD)  # endpoints elsewhere are what they were
    reread = [ns for ns in touched if ns in last.eds]
    if not reread and not last.reads:
        return replace(last, generation=view.generation)
    for svc, port, eps in last.reads:
        if svc.namespace in touched and endpoints_of(view, svc, port, memo) != eps:
            return None  # a DNS cluster or a headless listener changes with them
    old = last.outbound.endpoints
    fresh: dict[str, Built] = {}
    eds = dict(last.eds)
    for ns in reread:
        now: list[_EdsInput] = []
        for svc, port, name, before in last.eds[ns]:
            eps = endpoints_of(view, svc, port, memo)
            # The same endpoints: the same assignment (not rebuilt when the memo has dropped it).
            if eps != before and (built := endpoints.load_assignment(name, eps, memo)) is not old[name]:
                fresh[name] = built
            now.append((svc, port, name, eps))
        eds[ns] = tuple(now)
    outbound = replace(last.outbound, endpoints=old.replacing(fresh)) if fresh else last.outbound
    return replace(last, outbound=outbound, generation=view.generation, eds=eds)


def _plan_for(view: StoreView, scope: Scope, traits: ProxyTraits, self_ip: str, memo: Memo,
              hint: _Plan | None = None) -> _Plan:
    """The shared outbound plan; a proxy that is itself a headless endpoint gets its own variant."""
    plan = _plan(view, scope, traits, memo, hint)
    if self_ip and self_ip in plan.headless_ips:
        own = replace(traits, self_ip=self_ip)
        return _plan(view, scope, own, memo, hint)
    return plan


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


def _successor(snapshot: ProxySnapshot, endpoints: Resources, routes: Resources) -> ProxySnapshot:
    return snapshot.replacing({TypeUrl.ENDPOINT: endpoints, TypeUrl.ROUTE: routes})


def scope_of(view: StoreView, proxy: Proxy, memo: Memo) -> tuple[Workload, IstioSidecar | None, Scope]:
    workload = workload_of(view, proxy)
    sidecar = sidecar_for(view, workload)
    return workload, sidecar, scope_for(view, proxy.namespace, sidecar, memo)


@dataclass(slots=True, eq=False)
class _ProxyParts:
    """What one proxy's snapshot takes from its own pod and namespace."""

    proxy: Proxy
    workload: Workload
    sidecar: IstioSidecar | None
    by_name: bool  # the Pod was found by namespace/name (else by IP, or not at all)
    traits: ProxyTraits
    inbound_clusters: tuple[Built, ...]
    inbound_listeners: tuple[Built, ...]

    @property
    def pod_ref(self) -> ObjectRef:
        return ObjectRef(Kind.POD, self.proxy.namespace, self.proxy.pod_name)


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
            if ns in namespaces and parts.pod_ref in changes.refs:
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


def _build_parts(view: StoreView, proxy: Proxy, memo: Memo) -> _ProxyParts:
    workload = workload_of(view, proxy)
    sidecar = sidecar_for(view, workload)
    inbound = build_inbound(view, workload, sidecar, memo, domain_suffix=view.domain_suffix)
    by_name = workload.pod is not None and workload.pod.meta.name == proxy.pod_name
    return _ProxyParts(proxy, workload, sidecar, by_name, traits_of(workload), tuple(inbound.clusters),
                       tuple(inbound.listeners))


@dataclass(slots=True, eq=False)
class _Generated:
    """A proxy's last snapshot and what it was made from (istiod's ProxyNeedsPush, by data)."""

    generation: int
    parts: _ProxyParts
    scope: Scope
    plan: _Plan
    snapshot: ProxySnapshot


class ProxyIndex:
    """Every proxy's last `_Generated`, and which proxies a change can reach.

    Every other proxy keeps its snapshot without being visited (DESIGN principle 6: cost follows
    what a proxy sees). A change reaches, by kind (the rules of `_touches` and of scopes):
    - a Pod: proxies whose scope imports a service of its namespace, whose own Pod it is, or that
      were not found by Pod name;
    - a Service or ServiceEntry: proxies whose scope's egress hosts can import from its namespace,
      and the proxies of that namespace (their inbound side);
    - a Sidecar: the proxies of its namespace (every proxy for the root namespace's);
    - anything else (MeshConfig, Namespace): every proxy.
    Records are pinned in the memo (a proxy no change reached for many pushes keeps its record)
    and dropped when the proxy disconnects (`forget`).

    `settled`: the planner visited every proxy a change reached up to this generation, so a
    record is valid at its own generation or at `settled`, whichever is later.
    """

    def __init__(self, lineage: object = None) -> None:
        self.lineage = lineage  # the store whose views the records were made from
        self.records: dict[str, _Generated] = {}
        self._members: dict[Scope, set[str]] = {}  # scope -> proxy keys (proxies of one scope share imports)
        self._importers: dict[str, set[Scope]] = {}  # namespace -> scopes importing a service of it
        self._watchers: dict[str, set[Scope]] = {}  # namespace -> scopes that could import from it
        self._watch_all: set[Scope] = set()  # scopes that could import from any namespace
        self._residents: dict[str, set[str]] = {}  # namespace -> proxy keys of that namespace
        self._by_pod: dict[ObjectRef, set[str]] = {}
        self._unnamed: set[str] = set()
        self.settled = -1

    def put(self, key: str, record: _Generated) -> None:
        old = self.records.get(key)
        self.records[key] = record
        if old is not None:
            if old.scope is record.scope and old.parts is record.parts:
                return
            self._unlink(key, old)
        self._link(key, record)

    def forget(self, key: str) -> None:
        old = self.records.pop(key, None)
        if old is not None:
            self._unlink(key, old)

    def reached(self, changes: ChangeSet, root_namespace: str) -> set[str] | None:
        """Keys of the proxies these changes can reach; None: every proxy."""
        kinds = changes.kinds()
        if kinds - _INDEXED_KINDS:
            return None
        sidecars = changes.namespaces(Kind.SIDECAR)
        if root_namespace in sidecars:
            return None  # the root namespace's Sidecar is every namespace's default
        out: set[str] = set(self._unnamed) if Kind.POD in kinds else set()
        scopes: set[Scope] = set()
        for ns in changes.namespaces(Kind.POD):
            scopes.update(self._importers.get(ns, ()))
        services = changes.namespaces(Kind.SERVICE) | changes.namespaces(Kind.SERVICE_ENTRY)
        if services:
            scopes.update(self._watch_all)
        for ns in services:
            scopes.update(self._watchers.get(ns, ()))
        for ns in services | sidecars:
            out.update(self._residents.get(ns, ()))
        for scope in scopes:
            out.update(self._members[scope])
        if Kind.POD in kinds:
            for ref in changes.refs:
                keys = self._by_pod.get(ref)
                if keys:
                    out.update(keys)
        return out

    def _link(self, key: str, record: _Generated) -> None:
        scope = record.scope
        members = self._members.get(scope)
        if members is None:
            members = self._members[scope] = set()
            for ns in scope.namespaces:
                self._importers.setdefault(ns, set()).add(scope)
            if scope.watched is None:
                self._watch_all.add(scope)
            else:
                for ns in scope.watched:
                    self._watchers.setdefault(ns, set()).add(scope)
        members.add(key)
        self._residents.setdefault(record.parts.proxy.namespace, set()).add(key)
        if record.parts.by_name:
            self._by_pod.setdefault(record.parts.pod_ref, set()).add(key)
        else:
            self._unnamed.add(key)

    def _unlink(self, key: str, record: _Generated) -> None:
        scope = record.scope
        members = self._members.get(scope)
        if members is not None:
            members.discard(key)
            if not members:
                del self._members[scope]
                for ns in scope.namespaces:
                    _discard(self._importers, ns, scope)
                self._watch_all.discard(scope)
                for ns in scope.watched or ():
                    _discard(self._watchers, ns, scope)
        _discard(self._residents, record.parts.proxy.namespace, key)
        if record.parts.by_name:
            _discard(self._by_pod, record.parts.pod_ref, key)
        else:
            self._unnamed.discard(key)


_INDEXED_KINDS = frozenset({Kind.POD, Kind.SERVICE, Kind.SERVICE_ENTRY, Kind.SIDECAR})


def _discard(index: dict[Any, set[Any]], at: Any, item: Any) -> None:
    found = index.get(at)
    if found is not None:
        found.discard(item)
        if not found:
            del index[at]


def proxy_index(memo: Memo) -> ProxyIndex:
    return memo.pinned("proxy-index", ProxyIndex)


def reached(view: StoreView, since: int, memo: Memo) -> set[str] | None:
    """Keys of the proxies whose snapshot may differ between generation `since` and `view` (None: any).

    The caller promises to generate every returned proxy for `view`, and that every proxy was
    generated, or left out by this function, for generation `since`.
    """
    changes = view.changes_since(since)
    index = proxy_index(memo)
    if changes is None or index.lineage is not view.lineage:
        return None
    found = index.reached(changes, view.mesh.root_namespace)
    if found is not None:
        index.settled = max(index.settled, since)
    return found


def forget(key: str, memo: Memo) -> None:
    """The proxy disconnected: drop its record."""
    proxy_index(memo).forget(key)


def generate(view: StoreView, proxy: Proxy, memo: Memo) -> ProxySnapshot:
    index = proxy_index(memo)
    if index.lineage is not view.lineage:  # another store's views (generations do not compare): start over
        index = memo.pin("proxy-index", ProxyIndex(view.lineage))
    last = index.records.get(proxy.key)
    if last is not None and last.parts.proxy is not proxy:
        last = None  # a new connection's node: start over
    parts: _ProxyParts | None = None
    if last is not None:
        changes = view.changes_since(max(last.generation, index.settled))
        if changes is not None and not _touches(changes, last.parts, view.mesh.root_namespace):
            parts = last.parts  # its own side cannot have changed
    if parts is None:
        parts = _build_parts(view, proxy, memo)
    scope = scope_for(view, proxy.namespace, parts.sidecar, memo, last.scope if last is not None else None)
    self_ip = parts.workload.ips[0] if parts.workload.ips else ""
    plan = _plan_for(view, scope, parts.traits, self_ip, memo, last.plan if last is not None else None)
    outbound = plan.outbound
    ic, il = parts.inbound_clusters, parts.inbound_listeners
    snapshot: ProxySnapshot | None = None
    if last is not None and ic == last.parts.inbound_clusters and il == last.parts.inbound_listeners:
        before = last.plan.outbound
        if outbound is before:
            snapshot = last.snapshot
        elif outbound.clusters is before.clusters and outbound.listeners is before.listeners:
            # Endpoints (a Pod change) or routes only: the last snapshot with those replaced,
            # shared by every proxy that shared the last one.
            snapshot = memo.get(("successor", last.snapshot, outbound.endpoints.token, outbound.routes.token),
                                _successor, last.snapshot, outbound.endpoints, outbound.routes)
    if snapshot is None:
        # Builts are shared objects, so proxies with equal inbound parts share one snapshot too.
        snapshot = memo.get(("snapshot", outbound, ic, il), _snapshot, outbound, ic, il, memo)
    if last is not None and last.parts is parts and last.scope is scope and last.snapshot is snapshot:
        last.generation = view.generation
        last.plan = plan
    else:
        index.put(proxy.key, _Generated(view.generation, parts, scope, plan, snapshot))
    return snapshot


def route_for_name(view: StoreView, proxy: Proxy, name: str, memo: Memo) -> Built:
    """Any RDS name Envoy asks for: the scope's route, or istiod's empty answer for unknown names.

    generate() already holds every route its listeners reference; this answers names outside it
    (a listener from an older push, a hand-written bootstrap) so that no request goes unanswered.
    """
    workload, _, scope = scope_of(view, proxy, memo)
    return routes.outbound_route(scope, traits_of(workload), name, memo)
