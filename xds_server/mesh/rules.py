"""The VirtualServices and DestinationRules of one store generation, indexed once for every proxy.

istiod builds the same indexes once per push (push_context.go `initVirtualServices`,
`initDestinationRules`). Here the result is kept while the objects and the MeshConfig stay the
same objects, so a Pod or Service change does not re-index the rules (and scopes built on them
stay shared).

`label_keys` is every label key a rule can test against a client proxy's own labels (a VS
match's `sourceLabels`, a DR's `workloadSelector`). Only those labels shape a proxy's outbound
config, so proxies that differ only in other labels keep sharing one (mesh/scope.py ProxyTraits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioDestinationRule, IstioVirtualService
from xds_server.config.mesh import MeshConfig
from xds_server.memo import Memo
from xds_server.mesh.destination_rules import (
    NO_POLICY_HOSTS,
    DestinationRuleIndex,
    PolicyHosts,
    hosts_setting,
    index_destination_rules,
)
from xds_server.mesh.exports import PRIVATE, PUBLIC
from xds_server.mesh.virtual_services import VirtualServiceIndex, index_virtual_services
from xds_server.store.view import StoreView


@dataclass(frozen=True, slots=True, eq=False)
class TrafficRules:
    virtual_services: VirtualServiceIndex
    destination_rules: DestinationRuleIndex
    label_keys: frozenset[str]
    # The DestinationRule objects of each namespace that a lookup from that namespace sees (its
    # `namespace_local` entries, and the root namespace's private ones), and those exported to
    # others (its `exported` entries): each entry of `destination_rules` is made of one of these
    # alone (and the MeshConfig), so a scope whose lookups reach the same namespaces reads the same
    # answers while these stay the same objects (mesh/scope.py `rules_read`).
    local_destination_rules: Mapping[str, tuple[IstioDestinationRule, ...]] = field(default_factory=dict)
    exported_destination_rules: Mapping[str, tuple[IstioDestinationRule, ...]] = field(default_factory=dict)


def traffic_rules(view: StoreView, memo: Memo) -> TrafficRules:
    """The indexed rules of `view`: the same object while the rules and the MeshConfig are.

    Asked once per translated proxy: keyed by the view first, so the key made of every rule
    object is hashed once per generation, not once per proxy."""
    return memo.get(("traffic-rules-of", view), _indexed, view, memo)


def _indexed(view: StoreView, memo: Memo) -> TrafficRules:
    vs, dr = view.virtual_services, view.destination_rules
    return memo.get(("traffic-rules", vs, dr, view.mesh, view.domain_suffix), build_traffic_rules, vs, dr,
                    view.mesh, view.domain_suffix)


def policy_hosts(rules: TrafficRules | None, sets: Callable[[pb.DestinationRule], bool], memo: Memo) -> PolicyHosts:
    """The hosts of the DestinationRules `sets` accepts (mesh/destination_rules.py `hosts_setting`),
    found once per TrafficRules and predicate."""
    if rules is None:
        return NO_POLICY_HOSTS
    return memo.get(("dr-policy-hosts", rules, sets), hosts_setting, rules.destination_rules, sets)


def build_traffic_rules(virtual_services: Iterable[IstioVirtualService],
                        destination_rules: Iterable[IstioDestinationRule], mesh: MeshConfig,
                        domain_suffix: str) -> TrafficRules:
    vs_list, dr_list = list(virtual_services), list(destination_rules)
    local, exported = _destination_rules_by_namespace(dr_list, mesh)
    return TrafficRules(index_virtual_services(vs_list, mesh, domain_suffix),
                        index_destination_rules(dr_list, mesh, domain_suffix),
                        _label_keys(vs_list, dr_list), local, exported)


def _destination_rules_by_namespace(
    destination_rules: Iterable[IstioDestinationRule], mesh: MeshConfig
) -> tuple[dict[str, tuple[IstioDestinationRule, ...]], dict[str, tuple[IstioDestinationRule, ...]]]:
    """The objects behind each namespace's local and exported index entries (the placement of
    mesh/destination_rules.py `index_destination_rules`, istio `setDestinationRules`)."""
    local: dict[str, list[IstioDestinationRule]] = {}
    exported: dict[str, list[IstioDestinationRule]] = {}
    default_private = PRIVATE in mesh.default_destination_rule_export_to
    for dr in destination_rules:
        namespace = dr.meta.namespace
        export_to = {PRIVATE} if dr.spec.HasField("workload_selector") else set(dr.spec.export_to)
        private_only = (not export_to and default_private) or (
            len(export_to) == 1 and (PRIVATE in export_to or namespace in export_to))
        if private_only or not export_to or PUBLIC in export_to or PRIVATE in export_to or namespace in export_to:
            local.setdefault(namespace, []).append(dr)
        if not private_only:
            exported.setdefault(namespace, []).append(dr)
    return ({ns: tuple(v) for ns, v in local.items()}, {ns: tuple(v) for ns, v in exported.items()})


def _label_keys(virtual_services: Iterable[IstioVirtualService],
                destination_rules: Iterable[IstioDestinationRule]) -> frozenset[str]:
    keys: set[str] = set()
    for vs in virtual_services:
        spec = vs.spec
        for http in spec.http:
            for m in http.match:
                keys.update(m.source_labels)
        for tcp in spec.tcp:
            for tm in tcp.match:
                keys.update(tm.source_labels)
        for tls in spec.tls:
            for sm in tls.match:
                keys.update(sm.source_labels)
    for dr in destination_rules:
        if dr.spec.HasField("workload_selector"):
            keys.update(dr.spec.workload_selector.match_labels)
    return frozenset(keys)
