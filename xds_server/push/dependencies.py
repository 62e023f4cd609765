"""Which proxies a change can reach: the push planner's dependency index.

`generate` reports what each proxy's snapshot read (translate.dependencies.Dependencies); this
module indexes those reads and holds ONE rule per config kind (`RULES`) saying which reads a
changed object of that kind touches. It is istiod's SidecarScope.DependsOnConfig
(pilot/pkg/model/sidecar.go) and ConfigAffectsProxy (pilot/pkg/xds/proxy_dependencies.go) turned
around: instead of asking every proxy whether it depends on each change, the index answers which
proxies hold a touched read. A kind without a rule (MeshConfig, Namespace) reaches every proxy,
as a kind unknown to the SidecarScope does in istiod.

A new config kind adds its rule to `RULES`; if proxies read it through something not listed in
`Read` yet (a host, a named object), it adds that read too, and `generate` reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from enum import StrEnum
from typing import NamedTuple, TypeVar

from xds_server.config import IstioDestinationRule, IstioVirtualService, Kind, ObjectRef
from xds_server.config.hostname import is_wildcarded, subset_of
from xds_server.mesh.host_imports import WILDCARD_NAMESPACE
from xds_server.mesh.virtual_services import MESH_GATEWAY, resolve_gateway, resolve_host
from xds_server.store.view import ChangeSet, StoreView
from xds_server.translate.dependencies import Dependencies, ScopeDependencies, object_key, vs_import_key
from xds_server.translate.generator import Generated, Previous


class Read(StrEnum):
    """One kind of thing a proxy's snapshot reads, named by `Dependency.at`.

    A StrEnum: hashed as its string in C, where a plain Enum's hash is a Python call (the index
    hashes a few of these per visited proxy and push).
    """

    NAMESPACE = "namespace"  # its own namespace (Services, ServiceEntries and Sidecars there): own side
    POD = "pod"  # its own Pod, found by name ("namespace/name"): own side
    ANY_POD = "any pod"  # no Pod found by name: any Pod may become its own (own side)
    IMPORTED = "imported"  # a namespace whose services its scope imports: their endpoints
    WATCHED = "watched"  # a namespace whose Services and ServiceEntries its egress hosts can import
    SCOPE_NAMESPACE = "scope namespace"  # the namespace of its scope (DestinationRule lookup, first step)
    VIRTUAL_SERVICE = "virtual service"  # "namespace/name" of a VirtualService its scope selected or names
    VS_IMPORT = "vs import"  # an egress import VirtualService hosts are matched against ("ns/host")
    DESTINATION_RULE = "destination rule"  # "namespace/name" of a DestinationRule a lookup consulted


ANY_NAMESPACE = "*"  # Dependency(WATCHED, "*"): a `*/` egress host watches every namespace


class Dependency(NamedTuple):
    """One read: `Dependency(Read.IMPORTED, "shop")`, `Dependency(Read.POD, "shop/web-1")`."""

    read: Read
    at: str


# A rule: (changed object, mesh root namespace, the view the push translates) -> the reads it
# touches; None: every proxy. A rule that reads the object as it is now (`view.get(ref)`) covers
# the proxies it reaches now; those it reached before are found by what their scope recorded
# (istiod: the new or the previous SidecarScope depends on it). Without a view (None) a rule
# answers for any object of that kind.
Rule = Callable[[ObjectRef, str, StoreView | None], tuple[Dependency, ...] | None]

_ANY_POD = Dependency(Read.ANY_POD, "")
_WATCHED_ANYWHERE = Dependency(Read.WATCHED, ANY_NAMESPACE)


def _pod(ref: ObjectRef, root_namespace: str, view: StoreView | None) -> tuple[Dependency, ...]:
    """A Pod is an endpoint of the services of its namespace, and some proxy's own workload."""
    return (Dependency(Read.IMPORTED, ref.namespace), Dependency(Read.POD, object_key(ref.namespace, ref.name)),
            _ANY_POD)


def _service(ref: ObjectRef, root_namespace: str, view: StoreView | None) -> tuple[Dependency, ...]:
    """A Service or ServiceEntry: what scopes able to import from its namespace import (whatever its
    exportTo says now: it may have said otherwise before), and the inbound side of its namespace's proxies."""
    return (Dependency(Read.WATCHED, ref.namespace), _WATCHED_ANYWHERE, Dependency(Read.NAMESPACE, ref.namespace))


def _sidecar(ref: ObjectRef, root_namespace: str, view: StoreView | None) -> tuple[Dependency, ...] | None:
    """Which Sidecar applies to the proxies of its namespace; the root namespace's is every namespace's default."""
    if ref.namespace == root_namespace:
        return None
    return (Dependency(Read.NAMESPACE, ref.namespace),)


def _virtual_service(ref: ObjectRef, root_namespace: str, view: StoreView | None) -> tuple[Dependency, ...]:
    """istiod pushes a proxy for a VirtualService its new or previous SidecarScope selected
    (sidecar.go `DependsOnConfig`; a delegate's change as its roots', virtualservice_controller.go
    `xdsPush`). Previous: the scope recorded it (or, for a delegate, a root naming it). Now: an
    egress listener selects a `mesh` VirtualService when one of its hosts matches an import for the
    VirtualService's namespace or `*/` (virtualservice.go `SelectVirtualServices`), so the keys
    are those imports. exportTo and `~` exclusions are not checked here: a proxy they leave out is
    visited and gets the same config."""
    out = [Dependency(Read.VIRTUAL_SERVICE, object_key(ref.namespace, ref.name))]
    if view is None:
        return (*out, _ANY_VS_HOST)
    vs = view.get(ref)
    if not isinstance(vs, IstioVirtualService) or not vs.spec.hosts:
        return tuple(out)  # gone, or a delegate: only through what scopes recorded
    gateways = {resolve_gateway(g, ref.namespace) for g in vs.spec.gateways} or {MESH_GATEWAY}
    if MESH_GATEWAY not in gateways:
        return tuple(out)  # never a sidecar's now
    for host in vs.spec.hosts:
        host = resolve_host(host, ref.namespace, view.domain_suffix)
        matching, wildcarded = _imports_matching(host), is_wildcarded(host)
        for ns in (ref.namespace, WILDCARD_NAMESPACE):
            out.extend(Dependency(Read.VS_IMPORT, vs_import_key(ns, h)) for h in matching)
            if wildcarded:
                out.append(_ANY_VS_HOST)
    return tuple(out)


# A wildcard VirtualService host (`*.example.com`) may match any exact import: every scope records this.
_ANY_VS_HOST = Dependency(Read.VS_IMPORT, "any")


def _imports_matching(host: str) -> tuple[str, ...]:
    """The import hosts that `Name.Matches` an exact VirtualService host: itself, `*`, and each
    `*.<suffix>` covering it. (A wildcard VirtualService host: `*` and the covering wildcards;
    the exact imports it covers are reached through `_ANY_VS_HOST`.)"""
    labels = host.split(".")
    wildcards = tuple("*." + ".".join(labels[i:]) for i in range(1, len(labels)))
    return (host, "*", *wildcards)


def _destination_rule(ref: ObjectRef, root_namespace: str, view: StoreView | None) -> tuple[Dependency, ...] | None:
    """istiod pushes a proxy for a DestinationRule its new or previous SidecarScope resolved for
    one of its services (sidecar.go `DependsOnConfig`, `selectDestinationRules`). Previous: the
    scope recorded every rule its lookups consulted. Now: the rule is on the lookup path
    (push_context.go `destinationRule`) of proxies in its namespace (first step; a rule there can
    shadow another namespace's), of scopes importing a service of its host in its namespace
    (second step), and, in the root namespace, of every scope importing a service of its host.
    Selector rules apply only in their namespace, which the first step covers."""
    if view is None:
        return None
    out = [Dependency(Read.DESTINATION_RULE, object_key(ref.namespace, ref.name))]
    dr = view.get(ref)
    if not isinstance(dr, IstioDestinationRule):
        return tuple(out)  # gone: only through what scopes recorded
    host = resolve_host(dr.spec.host, ref.namespace, view.domain_suffix)
    serving = _namespaces_serving(view, host)
    if ref.namespace == root_namespace:
        out.extend(Dependency(Read.IMPORTED, ns) for ns in serving)
        # The proxies serving the host: their inbound clusters take the rule's connectionPool
        # (translate/inbound.py), whatever their egress imports.
        out.extend(Dependency(Read.SCOPE_NAMESPACE, ns) for ns in serving)
    else:
        out.append(Dependency(Read.SCOPE_NAMESPACE, ref.namespace))
        if ref.namespace in serving:
            out.append(Dependency(Read.IMPORTED, ref.namespace))
    return tuple(out)


def _namespaces_serving(view: StoreView, host: str) -> set[str]:
    """Namespaces of the Services and ServiceEntries whose hostname `host` names (or covers)."""
    found: set[str] = set()
    suffix = view.domain_suffix
    for svc in view.services:
        ns = svc.meta.namespace
        if ns not in found and subset_of(f"{svc.meta.name}.{ns}.svc.{suffix}", host):
            found.add(ns)
    for se in view.service_entries:
        ns = se.meta.namespace
        if ns not in found and any(subset_of(h, host) or subset_of(host, h) for h in se.spec.hosts):
            found.add(ns)
    return found


RULES: Mapping[str, Rule] = {
    Kind.POD: _pod,
    Kind.SERVICE: _service,
    Kind.SERVICE_ENTRY: _service,
    Kind.SIDECAR: _sidecar,
    Kind.VIRTUAL_SERVICE: _virtual_service,
    Kind.DESTINATION_RULE: _destination_rule,
}


def touched(changes: ChangeSet, root_namespace: str, view: StoreView | None = None) -> frozenset[Dependency] | None:
    """Every read these changes touch; None when one of them reaches every proxy. `view`: the
    generation being pushed (rules that read the changed object as it is now need it)."""
    out: set[Dependency] = set()
    for ref in changes.refs:
        rule = RULES.get(ref.kind)
        hit = rule(ref, root_namespace, view) if rule is not None else None
        if hit is None:
            return None
        out.update(hit)
    return frozenset(out)


def own_reads(depends_on: Dependencies) -> tuple[Dependency, ...]:
    """The reads of a proxy's own side: its workload, the Sidecar that applies, its inbound config."""
    pod = depends_on.pod
    found = _ANY_POD if pod is None else Dependency(Read.POD, object_key(pod.namespace, pod.name))
    return (Dependency(Read.NAMESPACE, depends_on.namespace), found,
            *(Dependency(Read.DESTINATION_RULE, key) for key in depends_on.inbound_rules))


def scope_reads(scope: ScopeDependencies) -> tuple[Dependency, ...]:
    """The reads of a scope's outbound config, shared by every proxy of that scope."""
    imported = tuple(Dependency(Read.IMPORTED, ns) for ns in scope.imports)
    watched = (_WATCHED_ANYWHERE,) if scope.watched is None else tuple(
        Dependency(Read.WATCHED, ns) for ns in scope.watched)
    return (*imported, *watched, Dependency(Read.SCOPE_NAMESPACE, scope.namespace), _ANY_VS_HOST,
            *(Dependency(Read.VIRTUAL_SERVICE, key) for key in scope.virtual_services),
            *(Dependency(Read.VS_IMPORT, key) for key in scope.vs_imports),
            *(Dependency(Read.DESTINATION_RULE, key) for key in scope.destination_rules))


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)


def _add(index: dict[K, set[V]], at: K, item: V) -> None:
    found = index.get(at)
    if found is None:
        index[at] = {item}
    else:
        found.add(item)


def _discard(index: dict[K, set[V]], at: K, item: V) -> None:
    found = index.get(at)
    if found is not None:
        found.discard(item)
        if not found:
            del index[at]


class ProxyDependencies:
    """Every connected proxy's last result, indexed by what it read.

    Own-side reads are indexed per proxy; scope reads per distinct `ScopeDependencies` (every
    proxy of one scope shares them, so a `*/*` mesh of N proxies and M namespaces holds M entries
    per scope, not N x M).

    `settled`: the planner visited every proxy a change reached up to this generation, so a
    record is exact at its own generation or at `settled`, whichever is later.
    """

    def __init__(self) -> None:
        self._records: dict[str, Generated] = {}
        self._own: dict[str, tuple[Dependency, ...]] = {}  # proxy key -> its own-side reads
        self._proxies: dict[Dependency, set[str]] = {}  # own-side read -> proxy keys
        self._scopes: dict[Dependency, set[ScopeDependencies]] = {}  # scope read -> scopes
        self._members: dict[ScopeDependencies, set[str]] = {}  # scope -> proxy keys
        self._anything: set[str] = set()  # results that may depend on anything (depends_on None)
        self._touched: dict[tuple[ChangeSet, str, StoreView | None], frozenset[Dependency] | None] = {}
        self.settled = -1

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def put(self, key: str, result: Generated) -> None:
        """Record a proxy's latest result (what its next generation may carry over)."""
        old = self._records.get(key)
        self._records[key] = result
        if old is not None:
            if old.depends_on is result.depends_on or old.depends_on == result.depends_on:
                return
            self._unlink(key, old.depends_on)
        self._link(key, result.depends_on)

    def forget(self, key: str) -> None:
        """The proxy disconnected: drop its record."""
        old = self._records.pop(key, None)
        if old is not None:
            self._unlink(key, old.depends_on)

    def settle(self, generation: int) -> None:
        """Every proxy a change up to `generation` reached has been visited."""
        self.settled = max(self.settled, generation)
        self._touched.clear()

    def reached(self, changes: ChangeSet, root_namespace: str, view: StoreView | None = None) -> set[str] | None:
        """Keys of the proxies these changes can reach; None: every proxy. `view`: the generation
        being pushed (without it, a VirtualService or DestinationRule change reaches more)."""
        hits = self._hits(changes, root_namespace, view)
        if hits is None:
            return None
        out = set(self._anything)
        scopes: set[ScopeDependencies] = set()
        for dep in hits:
            keys = self._proxies.get(dep)
            if keys:
                out.update(keys)
            found = self._scopes.get(dep)
            if found:
                scopes.update(found)
        for scope in scopes:
            out.update(self._members[scope])
        return out

    def previous(self, key: str, view: StoreView) -> Previous | None:
        """The proxy's last result with what the push stage knows of the changes since (for `generate`)."""
        result = self._records.get(key)
        if result is None or result.depends_on is None:
            return None
        valid_at = max(result.generation, self.settled)
        changes = view.changes_since(valid_at)
        if changes is None:
            return Previous(result, valid_at, own_side_changed=True)
        hits = self._hits(changes, view.mesh.root_namespace, view)
        changed = hits is None or not hits.isdisjoint(self._own[key])
        return Previous(result, valid_at, own_side_changed=changed)

    def _hits(self, changes: ChangeSet, root_namespace: str,
              view: StoreView | None) -> frozenset[Dependency] | None:
        # Most proxies of one push ask about the same change set (since `settled`): once each.
        cache_key = (changes, root_namespace, view)
        try:
            return self._touched[cache_key]
        except KeyError:
            pass
        if len(self._touched) > 16:
            self._touched.clear()
        hits = self._touched[cache_key] = touched(changes, root_namespace, view)
        return hits

    def _link(self, key: str, depends: Dependencies | None) -> None:
        if depends is None:
            self._anything.add(key)
            return
        own = self._own[key] = own_reads(depends)
        for dep in own:
            _add(self._proxies, dep, key)
        scope = depends.outbound
        members = self._members.get(scope)
        if members is None:
            members = self._members[scope] = set()
            for dep in scope_reads(scope):
                _add(self._scopes, dep, scope)
        members.add(key)

    def _unlink(self, key: str, depends: Dependencies | None) -> None:
        if depends is None:
            self._anything.discard(key)
            return
        for dep in self._own.pop(key, ()):
            _discard(self._proxies, dep, key)
        scope = depends.outbound
        members = self._members.get(scope)
        if members is not None:
            members.discard(key)
            if not members:
                del self._members[scope]
                for dep in scope_reads(scope):
                    _discard(self._scopes, dep, scope)

