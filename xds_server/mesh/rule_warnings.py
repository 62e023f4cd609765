"""Cross-object warnings about VirtualServices and DestinationRules: each object is valid on its
own, together one of them is partly ignored (never errors).

- two `mesh` VirtualServices claiming one host for overlapping namespaces: a sidecar uses the
  first in istiod's order (istioctl IST0109, ConflictingMeshGatewayVirtualServiceHosts);
- DestinationRules merged for one host (istio `mergeDestinationRule`) whose subsets collide: the
  newer one's subset is dropped.

Reported by `xds-server validate` (sources/files.py `load_files`), `render --type rules` and
/debug/configz (admin/traffic.py shows the rules themselves).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from xds_server.config import ConfigObject, IstioDestinationRule, IstioVirtualService, ObjectRef, Problem
from xds_server.mesh.exports import ExportTo
from xds_server.mesh.rules import TrafficRules, build_traffic_rules
from xds_server.mesh.virtual_services import ResolvedVirtualService
from xds_server.store.view import StoreView


def rule_warnings(objects: Iterable[ConfigObject], where: Mapping[ObjectRef, str] | None = None) -> list[Problem]:
    """`warnings_of` for objects not yet indexed (`xds-server validate`, through sources/files.py
    `load_files`)."""
    objs = list(objects)
    vs_list = [o for o in objs if isinstance(o, IstioVirtualService)]
    dr_list = [o for o in objs if isinstance(o, IstioDestinationRule)]
    if not vs_list and not dr_list:
        return []
    view = StoreView.build(0, objs)
    return warnings_of(build_traffic_rules(vs_list, dr_list, view.mesh, view.domain_suffix), dr_list, where)


def warnings_of(rules: TrafficRules, destination_rules: Iterable[IstioDestinationRule],
                where: Mapping[ObjectRef, str] | None = None) -> list[Problem]:
    """Cross-object warnings about the indexed VirtualServices and DestinationRules (never errors:
    each object is valid on its own; together one of them is partly ignored). `destination_rules`:
    the objects `rules` was built from; `where`: where each object was read."""
    located = where or {}
    return [*_host_conflicts(rules, located), *_dropped_subsets(rules, destination_rules, located)]


def _overlap(a: ExportTo, b: ExportTo) -> bool:
    return (a.public and (b.public or bool(b.namespaces))) or (b.public and bool(a.namespaces)) or bool(
        a.namespaces & b.namespaces)


def _host_conflicts(rules: TrafficRules, where: Mapping[ObjectRef, str]) -> list[Problem]:
    """istioctl IST0109 (ConflictingMeshGatewayVirtualServiceHosts): sidecars that see both use one."""
    by_host: dict[str, list[ResolvedVirtualService]] = defaultdict(list)
    for vs in sorted(rules.virtual_services.roots(), key=lambda v: v.age):
        for host in dict.fromkeys(h.lower() for h in vs.spec.hosts):
            by_host[host].append(vs)
    out = []
    for host, claimants in sorted(by_host.items()):
        for i, vs in enumerate(claimants[1:], 1):
            older = next((o for o in claimants[:i] if _overlap(o.export_to, vs.export_to)), None)
            if older is None:
                continue
            index_of = next(j for j, h in enumerate(vs.spec.hosts) if h.lower() == host)
            out.append(Problem(vs.ref, f"spec.hosts[{index_of}]: {host} is also routed by {older.ref} (older); "
                               "a sidecar uses one VirtualService per host, the first in istiod's order "
                               "(private to its namespace, exported to it, public; then oldest), and ignores "
                               "the other for that host (istioctl IST0109)", where.get(vs.ref, ""), warning=True))
    return out


def _dropped_subsets(rules: TrafficRules, objects: Iterable[IstioDestinationRule],
                     where: Mapping[ObjectRef, str]) -> list[Problem]:
    """Merged DestinationRules (istio `mergeDestinationRule`): a subset name already defined by an
    older DR for the same host is dropped from the newer one."""
    by_ref = {o.ref: o for o in objects}
    out: dict[tuple[ObjectRef, int], Problem] = {}
    for rule in rules.destination_rules.rules():
        if not rule.duplicate_subsets:
            continue
        defined: dict[str, ObjectRef] = {}
        for ref in rule.sources:
            obj = by_ref.get(ref)
            if obj is None:
                continue
            for i, subset in enumerate(obj.spec.subsets):
                owner = defined.setdefault(subset.name, ref)
                if owner != ref and (ref, i) not in out:
                    out[(ref, i)] = Problem(ref, f"spec.subsets[{i}].name: subset {subset.name} of host {rule.host} "
                                            f"is already defined by {owner} (older); the DestinationRules are "
                                            "merged and this subset is dropped", where.get(ref, ""), warning=True)
    return [out[k] for k in sorted(out, key=lambda k: (k[0], k[1]))]
