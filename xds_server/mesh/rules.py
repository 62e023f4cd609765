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

from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
from xds_server.mesh.virtual_services import VirtualServiceIndex, index_virtual_services
from xds_server.store.view import StoreView


@dataclass(frozen=True, slots=True, eq=False)
class TrafficRules:
    virtual_services: VirtualServiceIndex
    destination_rules: DestinationRuleIndex
    label_keys: frozenset[str]


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
    return TrafficRules(index_virtual_services(vs_list, mesh, domain_suffix),
                        index_destination_rules(dr_list, mesh, domain_suffix),
                        _label_keys(vs_list, dr_list))


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
