"""What one proxy's generated config read from the store, as `generate` reports it.

The push stage indexes these (push/dependencies.py) and decides, with one rule per config kind,
which proxies a change can reach: istiod keeps the same facts on the proxy's SidecarScope
(configDependencies, pilot/pkg/model/sidecar.go) and asks SidecarScope.DependsOnConfig. Every
proxy also reads the MeshConfig, so that is not recorded here: a MeshConfig change reaches all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from xds_server.config import ObjectRef
from xds_server.config.hostname import is_wildcarded
from xds_server.memo import Memo
from xds_server.mesh.destination_rules import DestinationRuleIndex, MergedDestinationRule, lookup_steps, sets_anything
from xds_server.mesh.rules import policy_hosts
from xds_server.mesh.scope import Scope, destination_hosts
from xds_server.mesh.virtual_services import ResolvedVirtualService, delegate_keys


@dataclass(frozen=True, slots=True)
class ScopeDependencies:
    """What the outbound half read: the same for every proxy of one Scope, and shared by them."""

    # Namespaces of the imported services: their Pods are the endpoints (EDS, DNS clusters,
    # headless listeners).
    imports: frozenset[str]
    # Namespaces whose Services and ServiceEntries the egress hosts can import at all (None: any
    # namespace, a `*/` host): a service appearing or changing there can change the scope.
    watched: frozenset[str] | None
    # The namespace of the scope's proxies: a DestinationRule there is on their lookup path for
    # any host (istiod's first lookup step, push_context.go `destinationRule`).
    namespace: str = ""
    # "namespace/name" of every VirtualService an egress listener selected, and of every delegate
    # those name (found or not): a change to one of them can change the routes.
    virtual_services: frozenset[str] = frozenset()
    # The egress imports VirtualService selection matches hosts against, as `vs_import_key` keys
    # ("<namespace or *>/<host>"): a VirtualService with a matching host may be selected now.
    vs_imports: frozenset[str] = frozenset()
    # "namespace/name" of every DestinationRule a lookup for one of the scope's hosts consulted
    # (the rules at the most specific host of each lookup step visited): a change to one of them
    # can change which rule applies.
    destination_rules: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What one proxy's snapshot read: its own side (workload, Sidecar choice, inbound) and its scope."""

    # Its own namespace: the Services and ServiceEntries there select its inbound ports, the
    # Sidecars there (and in the root namespace) decide which Sidecar applies.
    namespace: str
    # Its own Pod, found by name; None when found by IP or not at all, so any Pod can become it.
    pod: ObjectRef | None
    outbound: ScopeDependencies
    # "namespace/name" of every DestinationRule the inbound pools' lookups consulted for the
    # services it serves (their connectionPool applies inbound, whatever its egress imports): a
    # rule that leaves the host or goes reaches it through these.
    inbound_rules: frozenset[str] = frozenset()


def object_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def vs_import_key(namespace: str, host: str) -> str:
    """An egress import as VirtualService selection reads it: `<namespace or *>/<host>`.

    A wildcard other than `*` and `*.<suffix>` is keyed as `*` (it may match any host).
    """
    if is_wildcarded(host) and host != "*" and not host.startswith("*."):
        host = "*"
    return f"{namespace}/{host}"


def scope_dependencies(scope: Scope, memo: Memo) -> ScopeDependencies:
    """Everything the outbound config of `scope` read, for the push stage's index."""
    vs_imports = {vs_import_key(namespace, host) for parsed in scope.imports
                  for namespace, imported in parsed.imports.items() for host in imported}
    selected: dict[str, None] = {}
    routed: dict[str, None] = {}  # destinations of the selected routes
    for listener in scope.egress:
        for vs in listener.virtual_services:
            selected[object_key(vs.namespace, vs.ref.name)] = None
            selected.update(dict.fromkeys(_named_delegates(vs)))
            routed.update(dict.fromkeys(destination_hosts(vs.spec)))
    rules: set[str] = set()
    if scope.rules is not None:
        index = scope.rules.destination_rules
        looked_up = {svc.hostname: svc.namespace for svc in scope.services}
        for host in routed:  # as the builders look them up
            if host not in looked_up:
                found = scope.service(host)
                looked_up[host] = found.namespace if found is not None else ""
        named = policy_hosts(scope.rules, sets_anything, memo)  # a lookup for any other host consults nothing
        for hostname, service_namespace in looked_up.items():
            if named.may_match(hostname):
                rules.update(consulted_destination_rules(index, scope.namespace, hostname, service_namespace))
    return ScopeDependencies(scope.namespaces, scope.watched, scope.namespace, frozenset(selected),
                             frozenset(vs_imports), frozenset(rules))


def _named_delegates(vs: ResolvedVirtualService) -> Iterator[str]:
    """Delegates the root names as written (istiod pushes a root's proxies when one changes,
    virtualservice_controller.go `xdsPush`), including those that are missing or not exported."""
    for namespace, name in delegate_keys(vs):
        yield object_key(namespace, name)


def consulted_destination_rules(index: DestinationRuleIndex, proxy_namespace: str, hostname: str,
                                service_namespace: str) -> Iterator[str]:
    """The DestinationRules istiod's lookup (push_context.go `destinationRule`, as
    mesh/destination_rules.py `lookup_steps`) looks at for one host: every rule at the most
    specific host of each step it visits, including those the exportTo filter then drops (they
    end the step, so their change can change the winner)."""
    for rules, _ in lookup_steps(index, proxy_namespace, hostname, service_namespace):
        yield from rule_sources(rules)


def rule_sources(rules: Iterable[MergedDestinationRule]) -> Iterator[str]:
    """"namespace/name" of the DestinationRules merged into `rules`."""
    for rule in rules:
        for ref in rule.sources:
            yield object_key(ref.namespace, ref.name)
