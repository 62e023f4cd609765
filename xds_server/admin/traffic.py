"""What VirtualServices and DestinationRules do, as JSON-ready views and validation warnings.

Read from the mesh model the translator uses (mesh/virtual_services.py, mesh/destination_rules.py,
mesh/scope.py), so what is shown is what proxies get:

- `proxy_rules`: for one proxy, per Sidecar egress listener, the VirtualServices it imports (in
  istiod's order) and which one routes each host, with the ones it shadows (sidecars never merge
  two VirtualServices for one host: istiod keeps the first, istioctl reports IST0109); per
  service, the DestinationRule that applies (the merged one, with every source and any subset
  dropped as a duplicate) and which of its clusters stay plaintext because the policy asks for
  ISTIO_MUTUAL or an SDS `credentialName` (README, "Deliberate differences");
- `rules_summary`: every VirtualService and merged DestinationRule of the store (/debug/configz);
- `warnings_of` (`rule_warnings` from bare objects): cross-object warnings for `xds-server
  validate`, `render --type rules` and /debug/configz: two VirtualServices claiming one host for
  the same namespaces, DestinationRules merged for one host whose subsets collide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import ConfigObject, IstioDestinationRule, IstioVirtualService, ObjectRef, Problem
from xds_server.config.hostname import subset_of
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.destination_rules import MergedDestinationRule, traffic_policy_for
from xds_server.mesh.exports import ExportTo
from xds_server.mesh.proxy import Proxy
from xds_server.mesh.rules import TrafficRules, build_traffic_rules, traffic_rules
from xds_server.mesh.scope import EgressListener, ProxyTraits, Scope, scope_for
from xds_server.mesh.services import ServiceModel, registry_for
from xds_server.mesh.virtual_services import ResolvedVirtualService, virtual_service_for_host
from xds_server.mesh.workload import sidecar_for, workload_of
from xds_server.store.view import StoreView
from xds_server.translate.generator import traits_of

_TLS = pb.ClientTLSSettings
ISTIO_MUTUAL_IGNORED = "tls mode ISTIO_MUTUAL is ignored (xds-server has no mesh mTLS): plaintext"
CREDENTIAL_NAME_IGNORED = "tls credentialName is ignored (xds-server has no SDS): plaintext"


# ------------------------------------------------------------------ one proxy
def proxy_rules(view: StoreView, proxy: Proxy, memo: Memo | None = None) -> dict[str, Any]:
    """Which VirtualService routes each host and which DestinationRule applies to each service,
    for `proxy` (the same scope and traits the translator builds its outbound config from)."""
    memo = memo if memo is not None else Memo()
    workload = workload_of(view, proxy)
    sidecar = sidecar_for(view, workload)
    traits = traits_of(workload, traffic_rules(view, memo).label_keys)
    scope = scope_for(view, proxy.namespace, sidecar, memo)
    registered = {svc.hostname for svc in registry_for(view, memo).exported_to(proxy.namespace)}
    return {
        "proxy": proxy.pod_key,
        "namespace": proxy.namespace,
        "sidecar": str(sidecar.ref) if sidecar is not None else None,
        "egress": [_egress_view(listener, registered) for listener in scope.egress],
        "destination_rules": _destination_rules_view(scope, traits),
    }


def _egress_view(listener: EgressListener, registered: set[str]) -> dict[str, Any]:
    selected = listener.virtual_services
    routes: list[dict[str, Any]] = []
    bound: set[str] = set()
    for svc in listener.services:
        binding = virtual_service_for_host(selected, svc.hostname)
        if binding is None:
            continue
        bound.add(binding.vs_host)
        routes.append({
            "host": svc.hostname,
            "virtual_service": str(binding.virtual_service.ref),
            "matched_host": binding.vs_host,
            "shadowed": [str(ref) for ref in binding.shadowed],
            "delegates": [str(ref) for ref in binding.virtual_service.delegates],
        })
    # VS hosts that name no service at all get a virtual host of their own (istiod's
    # BuildSidecarOutboundVirtualHosts: on the ports of the services the VS binds, or port 80
    # when it binds none); a host naming a service, or a wildcard covering one, gets none.
    for vs in selected:
        for host in vs.spec.hosts:
            if host in bound or any(r["host"] == host for r in routes):
                continue
            if host in registered or any(subset_of(svc.hostname, host) for svc in listener.services):
                continue
            binding = virtual_service_for_host(selected, host)
            if binding is None or binding.virtual_service is not vs:
                continue
            routes.append({
                "host": host,
                "virtual_service": str(vs.ref),
                "matched_host": host,
                "shadowed": [str(ref) for ref in binding.shadowed],
                "delegates": [str(ref) for ref in vs.delegates],
                "service": False,
            })
    return {
        "port": listener.port,
        "bind": listener.bind,
        "services": len(listener.services),
        "virtual_services": [str(vs.ref) for vs in selected],
        "routes": sorted(routes, key=lambda r: r["host"]),
    }


def _destination_rules_view(scope: Scope, traits: ProxyTraits) -> list[dict[str, Any]]:
    """Per service the proxy gets a cluster for (the scope's CDS services, VirtualService
    destinations included: istio sidecar.go collectImportedServices), the DestinationRule that applies."""
    if scope.rules is None:
        return []
    services = {svc.hostname: svc for svc in scope.services}
    out = []
    for host in sorted(services):
        svc = services[host]
        rule = scope.destination_rule(host, svc.namespace, traits)
        if rule is None:
            continue
        out.append({
            "host": host,
            "service_namespace": svc.namespace,
            "destination_rule": merged_rule_json(rule),
            "warnings": plaintext_warnings(rule, svc),
        })
    return out


def merged_rule_json(rule: MergedDestinationRule) -> dict[str, Any]:
    return {
        "host": rule.host,
        "namespace": rule.namespace,
        "sources": [str(ref) for ref in rule.sources],
        "subsets": [s.name for s in rule.spec.subsets],
        "duplicate_subsets": list(rule.duplicate_subsets),
        "export_to": sorted(rule.export_to),
        "workload_selector": dict(rule.selector) if rule.selector is not None else None,
    }


def plaintext_warnings(rule: MergedDestinationRule, svc: ServiceModel) -> list[str]:
    """One line per cluster of `svc` whose TLS settings xds-server cannot honour (kept plaintext)."""
    out = []
    for port in svc.ports:
        for subset in ("", *(s.name for s in rule.spec.subsets)):
            policy = traffic_policy_for(rule, port.number, subset)
            why = _ignored_tls(policy)
            if why:
                out.append(f"{names.outbound_cluster(port.number, svc.hostname, subset)}: {why}")
    return out


def _ignored_tls(policy: pb.TrafficPolicy | None) -> str:
    if policy is None or not policy.HasField("tls"):
        return ""
    tls = policy.tls
    if tls.mode == _TLS.ISTIO_MUTUAL:
        return ISTIO_MUTUAL_IGNORED
    if tls.mode in (_TLS.SIMPLE, _TLS.MUTUAL) and tls.credential_name:
        return CREDENTIAL_NAME_IGNORED
    return ""


# ------------------------------------------------------------------ the whole store
def _export_json(export_to: ExportTo) -> list[str]:
    return ["*"] if export_to.public else sorted(export_to.namespaces)


def _roots(rules: TrafficRules) -> list[ResolvedVirtualService]:
    """Every `mesh` VirtualService once (delegates merged in), however many namespaces see it."""
    index = rules.virtual_services
    seen: dict[ObjectRef, ResolvedVirtualService] = {}
    lists = (index.public, *index.private.values(), *index.exported.values())
    for vs in (vs for listed in lists for vs in listed):
        seen.setdefault(vs.ref, vs)
    return list(seen.values())


def rules_summary(rules: TrafficRules) -> dict[str, Any]:
    """The `mesh` VirtualServices (names resolved, delegates merged) and the merged DestinationRules."""
    index = rules.virtual_services
    virtual_services = [{
        "virtual_service": str(vs.ref),
        "hosts": list(vs.spec.hosts),
        "export_to": _export_json(vs.export_to),
        "delegates": [str(ref) for ref in vs.delegates],
    } for vs in sorted(_roots(rules), key=lambda v: (v.ref.namespace, v.ref.name))]
    delegates = sorted(str(vs.ref) for vs in index.delegates.values())
    destination_rules = sorted((merged_rule_json(r) for r in rules.destination_rules.rules()),
                               key=lambda r: (r["namespace"], r["host"], r["sources"]))
    return {"virtual_services": virtual_services, "delegate_virtual_services": delegates,
            "destination_rules": destination_rules}


def rule_warnings(objects: Iterable[ConfigObject], where: Mapping[ObjectRef, str] | None = None) -> list[Problem]:
    """`warnings_of` for a set of objects not yet indexed (`xds-server validate`)."""
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
    for vs in sorted(_roots(rules), key=lambda v: v.age):
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
