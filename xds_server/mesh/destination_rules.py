"""Which DestinationRule applies to a proxy's traffic to a host (istiod's pilot/pkg/model
push_context.go `setDestinationRules`, `destinationRule`; destination_rule.go
`mergeDestinationRule`; sidecar.go `SidecarScope.DestinationRule`).

Pure functions, built once per store generation and shared by every proxy:
- `index_destination_rules`: hosts resolved against the DR's namespace; DRs oldest first (those
  with a workloadSelector ahead, whose exportTo is forced to their own namespace), merged per
  host inside three buckets: `namespace_local[ns]` (visible in ns), `exported[ns]` (all but
  the private-only ones), `root_local` (the root namespace's private-only ones);
- merging (`ENABLE_ENHANCED_DESTINATIONRULE_MERGE`, on by default): DRs for the same host string
  with equal exportTo and compatible selectors become one: subsets concatenated (a duplicate
  name keeps the older), the top-level trafficPolicy of the oldest DR that has one; a DR whose
  exportTo is a strict superset also merges and stays as its own entry; others stay separate;
- `destination_rule_for`: the proxy's namespace (root namespace: its private rules), then the
  service's namespace, then the root namespace; in each step the most specific host wins, and a
  step that finds the host ends the search. Within the found list the first DR of the proxy's
  namespace whose selector matches the proxy's labels wins, else the selector-less one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioDestinationRule, ObjectRef
from xds_server.config.hostname import is_wildcarded, more_specific, subset_of
from xds_server.config.mesh import MeshConfig
from xds_server.mesh.exports import PRIVATE, PUBLIC
from xds_server.mesh.virtual_services import resolve_host


@dataclass(frozen=True, slots=True, eq=False)
class MergedDestinationRule:
    """One or more DRs for one host, merged; `spec` is a private copy (treat as read-only)."""

    host: str
    namespace: str  # of the first (oldest) DR
    spec: pb.DestinationRule
    export_to: frozenset[str]  # as written (`.` kept), empty = the mesh default; a selector DR: {"."}
    selector: Mapping[str, str] | None
    sources: tuple[ObjectRef, ...]  # oldest first
    duplicate_subsets: tuple[str, ...] = ()  # names dropped because an older DR had them

    def visible_to(self, namespace: str) -> bool:
        """exportTo filter of istiod's `getExportedDestinationRuleFromNamespace`."""
        return not self.export_to or PUBLIC in self.export_to or namespace in self.export_to


@dataclass(frozen=True, slots=True)
class _Entry:
    rule: IstioDestinationRule
    host: str
    export_to: frozenset[str]
    selector: Mapping[str, str] | None


class HostRules(dict[str, tuple["MergedDestinationRule", ...]]):
    """Merged rules by host string, with the wildcard hosts listed once: a lookup is a dict hit or
    a walk over the wildcards only (most services have no rule, and each scope asks for each)."""

    __slots__ = ("wildcards",)

    def __init__(self, by_host: Mapping[str, tuple[MergedDestinationRule, ...]]) -> None:
        super().__init__(by_host)
        self.wildcards: tuple[str, ...] = tuple(h for h in by_host if is_wildcarded(h))

    def most_specific(self, hostname: str) -> str | None:
        """`most_specific_host` over these hosts: a dict hit, else a walk over the wildcards."""
        if hostname in self:
            return hostname
        return most_specific_host(hostname, self.wildcards)


NO_HOST_RULES = HostRules({})


class _Bucket:
    """istio `consolidatedDestRules`: merged rules by host string."""

    def __init__(self) -> None:
        self.by_host: dict[str, list[MergedDestinationRule]] = {}

    def add(self, entry: _Entry) -> None:
        existing = self.by_host.setdefault(entry.host, [])
        separate = True
        for i, merged in enumerate(existing):
            if entry.selector != merged.selector:
                continue  # selector-less with selector, or different selectors: kept apart
            if entry.export_to == merged.export_to:
                separate = False
            elif not (merged.export_to and entry.export_to > merged.export_to):
                continue  # a strict superset merges and also stays as its own entry
            existing[i] = _merge(merged, entry)
        if separate:
            existing.append(_single(entry))

    def freeze(self) -> HostRules:
        return HostRules({host: tuple(rules) for host, rules in self.by_host.items()})


def _single(entry: _Entry) -> MergedDestinationRule:
    spec = pb.DestinationRule()
    spec.CopyFrom(entry.rule.spec)
    spec.host = entry.host
    return MergedDestinationRule(entry.host, entry.rule.meta.namespace, spec, entry.export_to, entry.selector,
                                 (entry.rule.ref,))


def _merge(merged: MergedDestinationRule, entry: _Entry) -> MergedDestinationRule:
    spec = pb.DestinationRule()
    spec.CopyFrom(merged.spec)
    names = {s.name for s in spec.subsets}
    dropped = list(merged.duplicate_subsets)
    for subset in entry.rule.spec.subsets:
        if subset.name in names:
            dropped.append(subset.name)
            continue
        names.add(subset.name)
        spec.subsets.add().CopyFrom(subset)
    if not spec.HasField("traffic_policy") and entry.rule.spec.HasField("traffic_policy"):
        spec.traffic_policy.CopyFrom(entry.rule.spec.traffic_policy)
    return MergedDestinationRule(merged.host, merged.namespace, spec, merged.export_to, merged.selector,
                                 (*merged.sources, entry.rule.ref), tuple(dropped))


@dataclass(frozen=True, slots=True)
class DestinationRuleIndex:
    root_namespace: str
    namespace_local: Mapping[str, HostRules]
    exported: Mapping[str, HostRules]
    root_local: HostRules
    # The DestinationRule objects behind each namespace's `namespace_local` entries (those a
    # lookup from that namespace sees; the root namespace's `root_local` ones among them) and
    # behind its `exported` entries, in index order: each entry is made of one of these alone
    # (and the MeshConfig), so a scope whose lookups reach the same namespaces reads the same
    # answers while these stay the same objects (mesh/scope.py `rules_read`).
    local_sources: Mapping[str, tuple[IstioDestinationRule, ...]] = field(default_factory=dict)
    exported_sources: Mapping[str, tuple[IstioDestinationRule, ...]] = field(default_factory=dict)

    def rules(self) -> Iterable[MergedDestinationRule]:
        """Every merged rule once (for reports such as duplicate subsets)."""
        seen: set[int] = set()
        buckets = (*self.namespace_local.values(), *self.exported.values(), self.root_local)
        for bucket in buckets:
            for rules in bucket.values():
                for rule in rules:
                    if id(rule) not in seen:
                        seen.add(id(rule))
                        yield rule


def _sort_key(dr: IstioDestinationRule) -> tuple[bool, str, str, str]:
    meta = dr.meta
    return not dr.spec.HasField("workload_selector"), meta.creation_timestamp, meta.name, meta.namespace


def index_destination_rules(
    objects: Iterable[IstioDestinationRule], mesh: MeshConfig, domain_suffix: str = "cluster.local"
) -> DestinationRuleIndex:
    namespace_local: dict[str, _Bucket] = defaultdict(_Bucket)
    exported: dict[str, _Bucket] = defaultdict(_Bucket)
    root_local = _Bucket()
    local_sources: dict[str, list[IstioDestinationRule]] = defaultdict(list)
    exported_sources: dict[str, list[IstioDestinationRule]] = defaultdict(list)
    default_private = PRIVATE in mesh.default_destination_rule_export_to
    for dr in sorted(objects, key=_sort_key):
        namespace = dr.meta.namespace
        host = resolve_host(dr.spec.host, namespace, domain_suffix)
        if dr.spec.HasField("workload_selector"):
            export_to, selector = frozenset({PRIVATE}), dict(dr.spec.workload_selector.match_labels)
        else:
            export_to, selector = frozenset(dr.spec.export_to), None
        entry = _Entry(dr, host, export_to, selector)
        if not export_to or PUBLIC in export_to or PRIVATE in export_to or namespace in export_to:
            namespace_local[namespace].add(entry)
            local_sources[namespace].append(dr)
        private_only = (not export_to and default_private) or (
            len(export_to) == 1 and (PRIVATE in export_to or namespace in export_to))
        if not private_only:
            exported[namespace].add(entry)
            exported_sources[namespace].append(dr)
        elif namespace == mesh.root_namespace:
            root_local.add(entry)
    return DestinationRuleIndex(
        mesh.root_namespace,
        {ns: b.freeze() for ns, b in namespace_local.items()},
        {ns: b.freeze() for ns, b in exported.items()},
        root_local.freeze(),
        {ns: tuple(drs) for ns, drs in local_sources.items()},
        {ns: tuple(drs) for ns, drs in exported_sources.items()},
    )


def most_specific_host(hostname: str, hosts: Iterable[str]) -> str | None:
    """istio `MostSpecificHostMatch`: the exact name, else the most specific covering wildcard."""
    best: str | None = None
    for candidate in hosts:
        if candidate == hostname:
            return candidate
        covers = is_wildcarded(candidate) and subset_of(hostname, candidate)
        if covers and (best is None or more_specific(candidate, best)):
            best = candidate
    return best


def lookup_steps(
    index: DestinationRuleIndex, proxy_namespace: str, hostname: str, service_namespace: str
) -> Iterator[tuple[tuple[MergedDestinationRule, ...], tuple[MergedDestinationRule, ...]]]:
    """The steps istio `PushContext.destinationRule` visits for one host, as (the rules at the
    step's most specific host, those of them the proxy's namespace sees): the proxy's namespace
    (root namespace: its private rules), unfiltered; then the exported rules of the service's
    namespace and of the root namespace, through the exportTo filter. A step that skips the host
    yields nothing; the walk ends at the first step that sees a rule."""
    local = index.root_local if proxy_namespace == index.root_namespace else index.namespace_local.get(
        proxy_namespace, NO_HOST_RULES)
    host = local.most_specific(hostname)
    if host is not None:
        yield local[host], local[host]
        return
    for owner in (service_namespace, index.root_namespace):
        bucket = index.exported.get(owner, NO_HOST_RULES) if owner else NO_HOST_RULES
        host = bucket.most_specific(hostname)
        if host is not None:
            rules = bucket[host]
            seen = tuple(r for r in rules if r.visible_to(proxy_namespace))
            yield rules, seen
            if seen:
                return


def destination_rules_for(
    index: DestinationRuleIndex, proxy_namespace: str, hostname: str, service_namespace: str
) -> tuple[MergedDestinationRule, ...]:
    """istio `PushContext.destinationRule`: the rules of the first lookup step that knows the host."""
    for _, seen in lookup_steps(index, proxy_namespace, hostname, service_namespace):
        if seen:
            return seen
    return ()


def destination_rule_for(
    index: DestinationRuleIndex,
    proxy_namespace: str,
    proxy_labels: Mapping[str, str],
    hostname: str,
    service_namespace: str,
) -> MergedDestinationRule | None:
    """istio `SidecarScope.DestinationRule` (outbound): a selector DR of the proxy's namespace
    that selects it, else the selector-less DR, else none. Selectors never apply to inbound."""
    catch_all: MergedDestinationRule | None = None
    for rule in destination_rules_for(index, proxy_namespace, hostname, service_namespace):
        if rule.selector is None:
            catch_all = rule
        elif rule.namespace == proxy_namespace and all(proxy_labels.get(k) == v for k, v in rule.selector.items()):
            return rule
    return catch_all


@dataclass(frozen=True, slots=True)
class PolicyHosts:
    """The hosts of the merged rules that set some field (`hosts_setting`). A lookup for a host
    none of them covers finds no rule that sets it, so a caller that reads only that field need
    not look up: `may_match` holds for every host `most_specific_host` can match to one of them."""

    exact: frozenset[str] = frozenset()
    wildcards: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.exact and not self.wildcards

    def may_match(self, hostname: str) -> bool:
        if hostname in self.exact:
            return True
        return any(subset_of(hostname, w) for w in self.wildcards)


NO_POLICY_HOSTS = PolicyHosts()


def hosts_setting(index: DestinationRuleIndex, sets: Callable[[pb.DestinationRule], bool]) -> PolicyHosts:
    """The hosts of every merged rule whose spec `sets` accepts."""
    hosts = {rule.host for rule in index.rules() if sets(rule.spec)}
    return PolicyHosts(frozenset(h for h in hosts if not is_wildcarded(h)),
                       tuple(sorted(h for h in hosts if is_wildcarded(h))))


def sets_anything(spec: pb.DestinationRule) -> bool:
    """`hosts_setting`'s predicate for every rule (a lookup that finds any rule at all)."""
    return True


# ---------------------------------------------------------------- policy precedence
_BLOCKS = ("load_balancer", "connection_pool", "outlier_detection", "tls")
_EXTRAS = ("tunnel", "proxy_protocol", "retry_budget")


def _for_port(policy: pb.TrafficPolicy, port: int) -> tuple[pb.TrafficPolicy, bool]:
    """istio `GetPortLevelTrafficPolicy`: a `portLevelSettings` entry for `port` replaces the four
    blocks wholesale (a block it omits is unset, not inherited), and the top-level tunnel,
    proxyProtocol and retryBudget are not carried into it. The flag says whether one applied."""
    for entry in policy.port_level_settings:
        if entry.port.number == port:
            out = pb.TrafficPolicy()
            for block in _BLOCKS:
                if entry.HasField(block):
                    getattr(out, block).CopyFrom(getattr(entry, block))
            return out, True
    return policy, False


def traffic_policy_for(rule: MergedDestinationRule | None, port: int, subset: str = "") -> pb.TrafficPolicy | None:
    """The policy of cluster (port, subset): subset port-level > subset > DR port-level > DR
    (istio `MergeSubsetTrafficPolicy`). A subset's policy overrides each of the four blocks it
    sets, all four when it has a port-level entry for `port`, and tunnel / proxyProtocol /
    retryBudget when set. None when the rule sets nothing for the cluster. Treat as read-only."""
    if rule is None:
        return None
    spec = rule.spec
    base: pb.TrafficPolicy | None = None
    if spec.HasField("traffic_policy"):
        base, _ = _for_port(spec.traffic_policy, port)
    if not subset:
        return base
    chosen = next((s for s in spec.subsets if s.name == subset), None)
    if chosen is None or not chosen.HasField("traffic_policy"):
        return base
    own, port_level = _for_port(chosen.traffic_policy, port)
    if base is None:
        return own
    out = pb.TrafficPolicy()
    out.CopyFrom(base)
    for block in _BLOCKS:
        if port_level:
            out.ClearField(block)
        if own.HasField(block):
            getattr(out, block).CopyFrom(getattr(own, block))
    for extra in _EXTRAS:
        if own.HasField(extra):
            getattr(out, extra).CopyFrom(getattr(own, extra))
    del out.port_level_settings[:]
    return out
