"""Service targets: which (service, port) pairs a workload serves, and on which pod port.

istiod computes these on connect (`model/context.go` SetServiceTargets) from every registry:

* Kubernetes Services in the pod's namespace whose selector matches the workload labels, one
  target per Service port. Target port: a numeric `targetPort`, else the pod's container port
  of that name (and L4 protocol), else the service port itself. A named port the pod does not
  declare yields no target (Kubernetes' FindPort fails). Repeated (targetPort, protocol) pairs
  within one Service collapse to the first.
* ServiceEntries in the proxy's namespace whose workloadSelector selects the workload, or
  whose STATIC endpoints carry one of the proxy's IPs.

Targets are sorted oldest service first (then by hostname): whoever is first owns a target port
when several services share it, and its protocol is the port's protocol (istiod's
`listener_inbound.go` buildInboundChainConfigs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from xds_server.config import ContainerPort, IstioServiceEntry, Service
from xds_server.config.protocol import Protocol
from xds_server.mesh.workload import Workload
from xds_server.store.view import StoreView

DEFAULT_DOMAIN_SUFFIX = "cluster.local"


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """One service port served by this workload, and the port traffic arrives on."""

    hostname: str
    name: str  # Kubernetes Service name; the hostname for ServiceEntries (as istiod)
    namespace: str
    port: int  # the service port number
    port_name: str
    protocol: Protocol
    target_port: int
    created: str = ""  # RFC 3339 creation time of the owning object ("" sorts first)


def kube_hostname(name: str, namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> str:
    return f"{name}.{namespace}.svc.{domain_suffix}"


def service_targets(view: StoreView, workload: Workload,
                    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> tuple[ServiceTarget, ...]:
    """All targets of the workload, oldest service first (stable for equal ages)."""
    ports = _container_ports(workload)
    out = [t for svc in view.services_in(workload.namespace)
           for t in _kube_targets(svc, workload.labels, ports, domain_suffix)]
    ips = frozenset(workload.ips)
    out += [t for se in view.service_entries_in(workload.namespace)
            for t in _service_entry_targets(se, workload.labels, ips, ports)]
    out.sort(key=lambda t: (t.created, t.hostname))
    return tuple(out)


# ------------------------------------------------------------------ Kubernetes Services
def _container_ports(workload: Workload) -> tuple[ContainerPort, ...]:
    """The pod's declared ports; for a proxy whose pod is unknown, metadata POD_PORTS (istiod too)."""
    if workload.pod is not None:
        return workload.pod.container_ports
    raw = workload.proxy.metadata.get("POD_PORTS", "")
    if not raw:
        return ()
    try:
        items = json.loads(raw)
    except ValueError:
        return ()
    out = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and isinstance(item.get("containerPort"), int):
            out.append(ContainerPort(port=item["containerPort"], name=str(item.get("name", "")),
                                     protocol=str(item.get("protocol", "TCP")).upper()))
    return tuple(out)


def _selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    # An empty selector is no selector: Kubernetes drops `selector: {}`, and selector-less
    # Services only have hand-written Endpoints (not modelled here).
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def _kube_targets(svc: Service, labels: Mapping[str, str], ports: Sequence[ContainerPort],
                  domain_suffix: str) -> Iterable[ServiceTarget]:
    if svc.type == "ExternalName" or not _selects(svc.selector, labels):
        return
    host = kube_hostname(svc.meta.name, svc.meta.namespace, domain_suffix)
    seen: set[tuple[int, Protocol]] = set()
    for sp in svc.ports:
        target = _resolve_target_port(sp.port, sp.target_port, sp.protocol, ports)
        if target is None:
            continue
        proto = sp.istio_protocol
        if (target, proto) in seen:
            continue
        seen.add((target, proto))
        yield ServiceTarget(host, svc.meta.name, svc.meta.namespace, sp.port, sp.name, proto, target,
                            svc.meta.creation_timestamp)


def _resolve_target_port(port: int, target: int | str | None, l4: str,
                         ports: Sequence[ContainerPort]) -> int | None:
    if target is None or target == 0 or target == "":
        return port
    if isinstance(target, int):
        return target
    if target.isdigit():  # "8080" written as a string
        return int(target)
    for cp in ports:
        if cp.name == target and cp.protocol.upper() == l4.upper():
            return cp.port
    return None


# ------------------------------------------------------------------ ServiceEntries
def _service_entry_targets(se: IstioServiceEntry, labels: Mapping[str, str], ips: frozenset[str],
                           ports: Sequence[ContainerPort]) -> Iterable[ServiceTarget]:
    spec = se.spec
    if spec.HasField("workload_selector"):
        if not _selects(dict(spec.workload_selector.labels), labels):
            return
        # A selected pod: the SE port maps to the container port of the same name, if any.
        by_name = {cp.name: cp.port for cp in ports if cp.name}
        port_of = {p.number: by_name.get(p.name) or p.target_port or p.number for p in se.ports}
    else:
        mine = [ep for ep in spec.endpoints if ep.address in ips]
        if not mine:
            return
        ep = mine[0]
        port_of = {p.number: ep.ports.get(p.name) or p.target_port or p.number for p in se.ports}
    for host in spec.hosts:
        seen: set[tuple[int, Protocol]] = set()
        for p in se.ports:
            proto = p.protocol
            key = (port_of[p.number], proto)
            if key in seen:
                continue
            seen.add(key)
            yield ServiceTarget(host, host, se.meta.namespace, p.number, p.name, proto, port_of[p.number],
                                se.meta.creation_timestamp)
