"""generate(view, proxy, memo, previous) -> Generated: the translator's single entry point.

1. Resolve the proxy to its workload and the Sidecar that applies (mesh/workload.py).
2. Get the shared Scope of (namespace, Sidecar) for this store generation (mesh/scope.py).
3. Get the shared outbound resources of (Scope, proxy traits): every proxy with the same scope
   and traits receives the very same dicts of Builts (built once, serialized once).
4. Add the pod-specific inbound parts (inbound.py) and the fixed clusters.

The result says what the snapshot read (`Dependencies`, for the push stage to index) and keeps
what it was made from. Given that last result, and whether a change since touched the proxy's own
side (the push stage decides, push/dependencies.py), work the change leaves valid is carried over:
own parts, scope, outbound plan; a Pod change replaces one EDS mapping in the last snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from xds_server.config import IstioSidecar, Kind, ObjectRef
from xds_server.memo import Memo
from xds_server.mesh.proxy import Proxy
from xds_server.mesh.rules import traffic_rules
from xds_server.mesh.scope import EgressListener, ProxyTraits, Scope, scope_for
from xds_server.mesh.services import Endpoint, Port, ServiceModel, endpoints_of
from xds_server.mesh.workload import Workload, sidecar_for, workload_of
from xds_server.resources import Built, ProxySnapshot, ResourceMap, TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import clusters, endpoints, envoy, listeners_outbound, routes
from xds_server.translate.dependencies import Dependencies, scope_dependencies
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


def traits_of(workload: Workload, label_keys: frozenset[str] = frozenset()) -> ProxyTraits:
    proxy = workload.proxy
    ips = workload.ips
    labels = workload.labels
    return ProxyTraits(
        interception=proxy.interception_mode,
        ipv6_only=bool(ips) and all(envoy.is_ipv6(ip) for ip in ips),
        unprivileged=proxy.unprivileged,
        dns_domain=proxy.dns_domain,
        labels=tuple(sorted((k, labels[k]) for k in label_keys if k in labels)) if label_keys else (),
    )


@dataclass(frozen=True, slots=True, eq=False)
class _Plan:
    """The outbound resources of one (scope, traits) at one generation, and what they read.

    Besides the scope and the traits, outbound config reads the store in two ways only: the
    MeshConfig and service endpoints. `reads` holds the endpoints the clusters and listeners were
    built from (DNS clusters' inline hosts, headless listeners); `eds` the EDS clusters by
    namespace, each with the endpoints its assignment holds (a DestinationRule subset's cluster
    with its service narrowed to the subset's labels, translate/endpoints.py subset_service, so a
    Pod change re-reads subset assignments the same way). The next generation, with the same
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


def _plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo, hint: _Plan | None = None,
          hint_valid_at: int = -1) -> _Plan:
    return memo.get(("outbound", view, scope, traits), _build_plan, view, scope, traits, memo, hint, hint_valid_at)


def _build_plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo, hint: _Plan | None,
                hint_valid_at: int) -> _Plan:
    key = ("outbound-plan", scope, traits)
    last: _Plan | None = memo.recall(key)
    since = last.generation if last is not None else -1
    if hint is not None and hint.scope is scope and hint.traits == traits:
        # A live proxy's plan: valid up to the generation the push stage vouches for.
        hinted = max(hint.generation, hint_valid_at)
        if last is None or hinted > since:
            last, since = hint, hinted
    plan = _carry_over(view, last, since, memo) if last is not None else None
    if plan is None:
        plan = _routes_only(view, scope, traits, memo, hint, hint_valid_at)
    if plan is None:
        plan = _full_plan(view, scope, traits, memo, hint.outbound if hint is not None else None)
    memo.put(key, plan)
    memo.put(("outbound-last-plan", scope.namespace, scope.sidecar, traits), plan)
    return plan


def _routes_only(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo, hint: _Plan | None,
                 hint_valid_at: int) -> _Plan | None:
    """A new Scope that differs from the last one of its (namespace, Sidecar) only in what its
    routes read (a VirtualService's HTTP rules): the last plan with RDS rebuilt, its clusters,
    endpoints and listeners kept (so only RDS is sent). None when anything else may differ."""
    prior: _Plan | None = memo.recall(("outbound-last-plan", scope.namespace, scope.sidecar, traits))
    valid_at = prior.generation if prior is not None else -1
    if hint is not None and hint.traits == traits and (prior is None or max(hint.generation, hint_valid_at) > valid_at):
        prior, valid_at = hint, max(hint.generation, hint_valid_at)
    if prior is None or prior.scope is scope or not _same_but_routes(prior.scope, scope):
        return None
    prior = _carry_over(view, prior, valid_at, memo)  # its endpoints brought to this generation
    if prior is None:
        return None
    rds = [routes.outbound_route(scope, traits, name, memo) for name in prior.outbound.routes]
    outbound = replace(prior.outbound, routes=_same(prior.outbound.routes, _by_name(rds)))
    return replace(prior, scope=scope, outbound=outbound)


def _same_but_routes(old: Scope, new: Scope) -> bool:
    """Do clusters and listeners of `old` and `new` read the same? Same namespace, Sidecar, mesh
    policy, registry and DestinationRules (the scope key but its VirtualService selection: mesh/scope.py
    `scope_for`), the same services (VirtualService destinations included), and per egress listener
    the same services and the same tcp / tls routes of its VirtualServices. The outbound policy
    follows from the Sidecar and the mesh policy, both in the key."""
    key = _key_but_virtual_services(old)
    if key is None or key != _key_but_virtual_services(new):
        return False
    if old.services != new.services or len(old.egress) != len(new.egress):
        return False
    return all(a.services == b.services and _l4_routes(a) == _l4_routes(b)
               for a, b in zip(old.egress, new.egress, strict=True))


def _key_but_virtual_services(scope: Scope) -> tuple[object, ...] | None:
    """The key mesh/scope.py `scope_for` made `scope` under, ("scope", registry, namespace, Sidecar,
    mesh outbound policy, rules_read), without rules_read's first item, the VirtualServices each
    egress listener selects; its other items are the DestinationRules the scope's lookups consult
    (rules_read is None without rules). None for a scope `scope_for` did not make."""
    origin = scope.origin
    if len(origin) != 6:
        return None
    read = origin[5]
    return origin[:5], read[1:] if isinstance(read, tuple) else read


def _l4_routes(listener: EgressListener) -> list[tuple[object, ...]]:
    return [(vs.ref, vs.spec.hosts, vs.spec.tcp, vs.spec.tls) for vs in listener.virtual_services
            if vs.spec.tcp or vs.spec.tls]


def _full_plan(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo, previous: Outbound | None) -> _Plan:
    with memo.recording() as reads:
        specs = clusters.outbound_cluster_specs(view, scope, traits, memo)
        cds = [*clusters.fixed_clusters(view.mesh, traits, memo), *clusters.outbound_clusters(specs, memo)]
        lds = listeners_outbound.build_outbound_listeners(view, scope, traits, memo)
    # An assignment for every EDS cluster, subset clusters included (their service is narrowed to
    # the subset's endpoints); empty when no endpoint is ready or matches (503 UH, as istiod).
    by_ns: dict[str, list[_EdsInput]] = {}
    eds: list[Built] = []
    for svc, port, spec in specs:
        if spec.is_eds:
            eps: tuple[Endpoint, ...] = ()
            if svc is not None:  # None: a subset no endpoint can match, its assignment stays empty
                eps = endpoints_of(view, svc, port, memo)
                by_ns.setdefault(svc.namespace, []).append((svc, port, spec.name, eps))
            eds.append(endpoints.load_assignment(spec.name, eps, memo))
    listeners = list(lds.listeners)
    if traits.capture:
        listeners.append(listeners_outbound.virtual_outbound(scope, traits, memo))
    rds = [routes.outbound_route(scope, traits, name, memo) for name in lds.routes]
    fresh = Outbound(_by_name(cds), _by_name(eds), _by_name(listeners), _by_name(rds))
    # The same (namespace, Sidecar, traits) in the previous generation: keep what did not change.
    last: _Plan | None = memo.recall(("outbound-last-plan", scope.namespace, scope.sidecar, traits))
    out = _stable(fresh, last.outbound if last is not None else previous)
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
              hint: _Plan | None = None, hint_valid_at: int = -1) -> _Plan:
    """The shared outbound plan; a proxy that is itself a headless endpoint gets its own variant."""
    plan = _plan(view, scope, traits, memo, hint, hint_valid_at)
    if self_ip and self_ip in plan.headless_ips:
        own = replace(traits, self_ip=self_ip)
        return _plan(view, scope, own, memo, hint, hint_valid_at)
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


@dataclass(slots=True, eq=False)
class _ProxyParts:
    """What one proxy's snapshot takes from its own pod and namespace."""

    proxy: Proxy
    workload: Workload
    sidecar: IstioSidecar | None
    by_name: bool  # the Pod was found by namespace/name (else by IP, or not at all)
    traits: ProxyTraits
    label_keys: frozenset[str]  # what `traits.labels` was cut to (mesh/rules.py)
    inbound_clusters: tuple[Built, ...]
    inbound_listeners: tuple[Built, ...]
    # What the inbound pools read of DestinationRules (their connectionPool applies inbound too),
    # and which rules their lookups consulted.
    rule_inputs: tuple[object, ...] = ()
    inbound_rules: frozenset[str] = frozenset()


def _rule_inputs(view: StoreView, memo: Memo) -> tuple[object, ...]:
    """What the inbound pools read of the rules: one tuple per view, and the same tuple while the
    DestinationRules and the MeshConfig stay the same objects. Asked once per visited proxy: keyed
    by the view first (as mesh/rules.py `traffic_rules`), so the key made of every rule object is
    hashed once per generation, and a proxy's last inputs are most often the same object."""
    return memo.get(("inbound-rule-inputs-of", view), _interned_rule_inputs, view, memo)


def _interned_rule_inputs(view: StoreView, memo: Memo) -> tuple[object, ...]:
    inputs = (view.destination_rules, view.mesh)
    return memo.get(("inbound-rule-inputs", inputs), _given, inputs)


def _given(value: tuple[object, ...]) -> tuple[object, ...]:
    return value


def _inbound(view: StoreView, workload: Workload, sidecar: IstioSidecar | None, memo: Memo) -> tuple[
        tuple[Built, ...], tuple[Built, ...], frozenset[str]]:
    rules = traffic_rules(view, memo).destination_rules if view.destination_rules else None
    inbound = build_inbound(view, workload, sidecar, memo, domain_suffix=view.domain_suffix, destination_rules=rules)
    return tuple(inbound.clusters), tuple(inbound.listeners), inbound.destination_rules


def _build_parts(view: StoreView, proxy: Proxy, memo: Memo) -> _ProxyParts:
    workload = workload_of(view, proxy)
    sidecar = sidecar_for(view, workload)
    clusters, listeners, consulted = _inbound(view, workload, sidecar, memo)
    by_name = workload.pod is not None and workload.pod.meta.name == proxy.pod_name
    label_keys = traffic_rules(view, memo).label_keys
    return _ProxyParts(proxy, workload, sidecar, by_name, traits_of(workload, label_keys), label_keys,
                       clusters, listeners, _rule_inputs(view, memo), consulted)


@dataclass(slots=True, eq=False)
class Generated:
    """One proxy's snapshot, what it read, and what it was made from (for the next generation).

    `depends_on` None: the result may depend on anything, so every push asks again (a stand-in
    for the translator in tests returns just a snapshot). The other fields are the translator's
    own, carried over by `generate` and opaque to everyone else. Never changed once made (not
    frozen only because one is made per visited proxy and push, and frozen init costs 3x).
    """

    snapshot: ProxySnapshot
    depends_on: Dependencies | None = None
    generation: int = -1
    parts: _ProxyParts | None = None
    scope: Scope | None = None
    plan: _Plan | None = None


@dataclass(slots=True, eq=False)
class Previous:
    """A proxy's last result, and what the push stage knows about the changes since.

    `valid_at`: no change between `result.generation` and this generation reached the proxy, so
    the result is exact there too. `own_side_changed`: a change after `valid_at` touched what the
    proxy's own side read (its Pod, its namespace's Services, ServiceEntries and Sidecars), so its
    workload, Sidecar choice and inbound config are looked up again. Never changed once made.
    """

    result: Generated
    valid_at: int
    own_side_changed: bool


def _dependencies(parts: _ProxyParts, scope: Scope, memo: Memo) -> Dependencies:
    proxy = parts.proxy
    pod = ObjectRef(Kind.POD, proxy.namespace, proxy.pod_name) if parts.by_name else None
    outbound = memo.get(("depends-on", scope), scope_dependencies, scope, memo)
    return Dependencies(proxy.namespace, pod, outbound, parts.inbound_rules)


def generate(view: StoreView, proxy: Proxy, memo: Memo, previous: Previous | None = None) -> Generated:
    """The proxy's snapshot for `view`; with `previous`, carrying over what the changes since left valid."""
    last = previous.result if previous is not None else None
    if last is not None and (last.parts is None or last.parts.proxy is not proxy):
        last = None  # a new connection's node, or not the translator's own result: start over
    parts: _ProxyParts | None = None
    valid_at = -1
    if last is not None and previous is not None:
        valid_at = previous.valid_at
        if not previous.own_side_changed:
            parts = last.parts  # its own side cannot have changed
    if parts is None:
        parts = _build_parts(view, proxy, memo)
    else:
        if (label_keys := traffic_rules(view, memo).label_keys) != parts.label_keys:
            # The rules now test other labels of client proxies: same own side, other traits.
            parts = replace(parts, traits=traits_of(parts.workload, label_keys), label_keys=label_keys)
        rule_inputs = _rule_inputs(view, memo)
        if rule_inputs is not parts.rule_inputs and rule_inputs != parts.rule_inputs:
            # DestinationRules changed: the inbound pools may read another rule (same workload, Sidecar).
            clusters, listeners, consulted = _inbound(view, parts.workload, parts.sidecar, memo)
            parts = replace(parts, inbound_clusters=clusters, inbound_listeners=listeners, rule_inputs=rule_inputs,
                            inbound_rules=consulted)
    scope = scope_for(view, proxy.namespace, parts.sidecar, memo, last.scope if last is not None else None)
    self_ip = parts.workload.ips[0] if parts.workload.ips else ""
    plan = _plan_for(view, scope, parts.traits, self_ip, memo, last.plan if last is not None else None, valid_at)
    outbound = plan.outbound
    ic, il = parts.inbound_clusters, parts.inbound_listeners
    snapshot: ProxySnapshot | None = None
    if (last is not None and last.parts is not None and last.plan is not None
            and ic == last.parts.inbound_clusters and il == last.parts.inbound_listeners):
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
    if last is not None and last.depends_on is not None and last.parts is parts and last.scope is scope:
        depends_on = last.depends_on
    else:
        depends_on = _dependencies(parts, scope, memo)
    return Generated(snapshot, depends_on, view.generation, parts, scope, plan)
