"""What VirtualServices and DestinationRules do, as JSON-ready views.

Read from the mesh model the translator uses (mesh/virtual_services.py, mesh/destination_rules.py,
mesh/scope.py), so what is shown is what proxies get:

- `proxy_rules`: for one proxy, per Sidecar egress listener, the VirtualServices it imports (in
  istiod's order) and which one routes each host, with the ones it shadows (sidecars never merge
  two VirtualServices for one host: istiod keeps the first, istioctl reports IST0109); per
  service, the DestinationRule that applies (the merged one, with every source and any subset
  dropped as a duplicate) and which of its clusters stay plaintext because the policy asks for
  ISTIO_MUTUAL or an SDS `credentialName` (README, "Deliberate differences");
- `rules_summary`: every VirtualService and merged DestinationRule of the store (/debug/configz).

The cross-object warnings shown with them are mesh/rule_warnings.py's.
"""

from __future__ import annotations

from typing import Any

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.hostname import subset_of
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.destination_rules import MergedDestinationRule, traffic_policy_for
from xds_server.mesh.exports import ExportTo
from xds_server.mesh.proxy import Proxy
from xds_server.mesh.rules import TrafficRules, traffic_rules
from xds_server.mesh.scope import EgressListener, ProxyTraits, Scope, scope_for
from xds_server.mesh.services import ServiceModel, registry_for
from xds_server.mesh.virtual_services import virtual_service_for_host
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


def rules_summary(rules: TrafficRules) -> dict[str, Any]:
    """The `mesh` VirtualServices (names resolved, delegates merged) and the merged DestinationRules."""
    index = rules.virtual_services
    virtual_services = [{
        "virtual_service": str(vs.ref),
        "hosts": list(vs.spec.hosts),
        "export_to": _export_json(vs.export_to),
        "delegates": [str(ref) for ref in vs.delegates],
    } for vs in sorted(index.roots(), key=lambda v: (v.ref.namespace, v.ref.name))]
    delegates = sorted(str(vs.ref) for vs in index.delegates.values())
    destination_rules = sorted((merged_rule_json(r) for r in rules.destination_rules.rules()),
                               key=lambda r: (r["namespace"], r["host"], r["sources"]))
    return {"virtual_services": virtual_services, "delegate_virtual_services": delegates,
            "destination_rules": destination_rules}
