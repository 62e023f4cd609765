"""The internal service model: Kubernetes Services and ServiceEntries as istiod sees them.

One `ServiceModel` per hostname (and namespace): hostname, VIPs, ports with their Istio
protocol, resolution, exportTo, location and where its endpoints come from
(pilot/pkg/serviceregistry/kube/conversion.go, serviceentry/conversion.go). `ServiceRegistry`
indexes one store generation for the scope rules: candidate order and exportTo visibility
(push_context.go initServiceRegistry / servicesExportedToNamespace).

Models are plain values (no config object inside), so everything built from them can be
memoised across store generations: an unchanged Service gives an equal model.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioServiceEntry, Kind, Pod, Service
from xds_server.config.protocol import Protocol
from xds_server.config.refs import EMPTY, FrozenDict
from xds_server.memo import Memo
from xds_server.store.view import StoreView

DEFAULT_DOMAIN_SUFFIX = "cluster.local"
UNSPECIFIED_IP = "0.0.0.0"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"
CONNECT_STRATEGY_ANNOTATION = "istio.io/connect-strategy"
PUBLIC, PRIVATE, NONE = "*", ".", "~"


class Registry(StrEnum):
    KUBERNETES = "Kubernetes"
    EXTERNAL = "External"  # ServiceEntry


class Resolution(StrEnum):
    CLIENT_SIDE_LB = "ClientSideLB"  # EDS
    PASSTHROUGH = "Passthrough"  # ORIGINAL_DST (headless, SE NONE)
    DNS_LB = "DNSLB"  # STRICT_DNS
    DNS_ROUND_ROBIN_LB = "DNSRoundRobinLB"  # LOGICAL_DNS
    ALIAS = "Alias"  # Kubernetes ExternalName: no listener, no cluster
    DYNAMIC_DNS = "DynamicDNS"  # not supported: no listener, no cluster


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    number: int
    protocol: Protocol
    # Kubernetes: None (= number), a number or a container port name. ServiceEntry: number or None.
    target_port: int | str | None = None


@dataclass(frozen=True, slots=True)
class StaticEndpoint:
    """A ServiceEntry `endpoints[]` entry (WorkloadEntry shape)."""

    address: str  # IP, hostname (DNS resolution) or unix:///path
    ports: tuple[tuple[str, int], ...] = ()  # by SE port name
    weight: int = 0
    labels: FrozenDict = EMPTY  # what DestinationRule subsets select on

    def port_for(self, name: str) -> int | None:
        for port_name, number in self.ports:
            if port_name == name:
                return number
        return None


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """One upstream host of one cluster: what EDS or an inline load_assignment carries."""

    address: str  # IP, DNS name, or unix:///path (then port is 0)
    port: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ServiceModel:
    hostname: str
    namespace: str
    name: str  # Service name, or ServiceEntry name
    registry: Registry
    ports: tuple[Port, ...]
    resolution: Resolution
    addresses: tuple[str, ...] = ()  # VIPs (IP or CIDR); empty means 0.0.0.0
    export_to: frozenset[str] = frozenset()  # empty: MeshConfig defaultServiceExportTo
    mesh_external: bool = False
    creation: str = ""
    selector: FrozenDict | None = None  # pods providing endpoints (Service selector / SE workloadSelector)
    static_endpoints: tuple[StaticEndpoint, ...] = ()
    publish_not_ready: bool = False
    logical_dns: bool = False  # SE annotation istio.io/connect-strategy: RACE_FIRST_TCP_CONNECT
    subject_alt_names: tuple[str, ...] = ()  # ServiceEntry: what TLS origination verifies by default

    @property
    def address(self) -> str:
        """The primary VIP, `0.0.0.0` when there is none (headless, VIP-less ServiceEntry)."""
        return self.addresses[0] if self.addresses else UNSPECIFIED_IP

    @property
    def is_kubernetes(self) -> bool:
        return self.registry is Registry.KUBERNETES

    def port(self, number: int) -> Port | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None

    def with_ports(self, ports: Iterable[Port]) -> ServiceModel:
        return replace(self, ports=tuple(ports))

    @property
    def builds_config(self) -> bool:
        """Alias and dynamic-DNS services get neither listeners nor clusters."""
        return self.resolution not in (Resolution.ALIAS, Resolution.DYNAMIC_DNS)


# ------------------------------------------------------------------ conversion
def _export_to(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip() for v in values if v.strip())


def from_kube_service(svc: Service, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> ServiceModel:
    meta = svc.meta
    if svc.type == "ExternalName":
        resolution = Resolution.ALIAS
        addresses: tuple[str, ...] = ()
    elif svc.headless:
        resolution, addresses = Resolution.PASSTHROUGH, ()
    else:
        resolution = Resolution.CLIENT_SIDE_LB
        addresses = (svc.cluster_ip,) if svc.cluster_ip else ()
    ports = tuple(
        Port(p.name, p.port, p.istio_protocol, p.target_port)
        for p in svc.ports
    )
    export = meta.annotations.get(EXPORT_TO_ANNOTATION, "")
    return ServiceModel(
        hostname=f"{meta.name}.{meta.namespace}.svc.{domain_suffix}",
        namespace=meta.namespace,
        name=meta.name,
        registry=Registry.KUBERNETES,
        ports=ports,
        resolution=resolution,
        addresses=addresses,
        export_to=_export_to(export.split(",")),
        creation=meta.creation_timestamp,
        selector=svc.selector,
        publish_not_ready=svc.publish_not_ready_addresses,
    )


_SE_RESOLUTION = {
    pb.ServiceEntry.NONE: Resolution.PASSTHROUGH,
    pb.ServiceEntry.STATIC: Resolution.CLIENT_SIDE_LB,
    pb.ServiceEntry.DNS: Resolution.DNS_LB,
    pb.ServiceEntry.DNS_ROUND_ROBIN: Resolution.DNS_ROUND_ROBIN_LB,
    pb.ServiceEntry.DYNAMIC_DNS: Resolution.DYNAMIC_DNS,
}


def _plain_address(text: str) -> str:
    """A /32 (or /128) CIDR is a plain IP; other CIDRs stay CIDRs."""
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return text
        if net.num_addresses == 1:
            return str(net.network_address)
        return str(net)
    return text


def from_service_entry(se: IstioServiceEntry) -> list[ServiceModel]:
    """One model per host; all of the entry's addresses are that host's VIPs."""
    spec, meta = se.spec, se.meta
    ports = tuple(Port(p.name, p.number, p.protocol, p.target_port or None) for p in se.ports)
    endpoints = tuple(
        StaticEndpoint(e.address, tuple(sorted(e.ports.items())), e.weight, FrozenDict(e.labels))
        for e in spec.endpoints
    )
    selector = (FrozenDict(spec.workload_selector.labels) if spec.HasField("workload_selector") else None)
    resolution = _SE_RESOLUTION.get(spec.resolution, Resolution.PASSTHROUGH)
    addresses = tuple(_plain_address(a) for a in spec.addresses)
    export_to = _export_to(spec.export_to)
    mesh_external = spec.location == pb.ServiceEntry.MESH_EXTERNAL
    logical_dns = meta.annotations.get(CONNECT_STRATEGY_ANNOTATION) == "RACE_FIRST_TCP_CONNECT"
    return [ServiceModel(hostname=h, namespace=meta.namespace, name=meta.name, registry=Registry.EXTERNAL,
                         ports=ports, resolution=resolution, addresses=addresses, export_to=export_to,
                         mesh_external=mesh_external, creation=meta.creation_timestamp, selector=selector,
                         static_endpoints=endpoints, logical_dns=logical_dns,
                         subject_alt_names=tuple(spec.subject_alt_names))
            for h in spec.hosts]


def _mergeable(a: ServiceModel, b: ServiceModel) -> bool:
    return (a.resolution == b.resolution and a.selector == b.selector and a.export_to == b.export_to
            and a.addresses == b.addresses)


# ------------------------------------------------------------------ registry
class ServiceRegistry:
    """Every service of one store generation, in istiod's order (oldest, then name, then namespace)."""

    def __init__(self, services: Iterable[ServiceModel], default_export_to: Iterable[str] = (PUBLIC,)) -> None:
        self.inputs = tuple(services)  # as given (the next generation compares them by identity)
        by_key: dict[tuple[str, str], ServiceModel] = {}
        for svc in sorted(self.inputs, key=lambda s: (s.creation, s.name, s.namespace)):
            key = (svc.hostname, svc.namespace)
            current = by_key.get(key)
            if current is None:
                by_key[key] = svc
            elif current.is_kubernetes:
                continue  # a Kubernetes Service owns its hostname in its namespace
            elif svc.is_kubernetes:
                by_key[key] = svc
            elif _mergeable(current, svc):
                extra = [p for p in svc.ports if current.port(p.number) is None]
                by_key[key] = current.with_ports(current.ports + tuple(extra))
            # else: the older ServiceEntry wins
        self.services: tuple[ServiceModel, ...] = tuple(by_key.values())
        self._rank = {id(s): i for i, s in enumerate(self.services)}
        self.default_export_to = frozenset(default_export_to)
        self._exported: dict[str, list[ServiceModel]] = {}

    @cached_property
    def by_namespace(self) -> dict[str, list[ServiceModel]]:
        out: dict[str, list[ServiceModel]] = defaultdict(list)
        for svc in self.services:
            out[svc.namespace].append(svc)
        return out

    @cached_property
    def by_hostname(self) -> dict[str, list[ServiceModel]]:
        """Every namespace's services of a hostname (a VirtualService destination names a host)."""
        out: dict[str, list[ServiceModel]] = {}
        for svc in self.services:
            out.setdefault(svc.hostname, []).append(svc)
        return out

    def _group(self, svc: ServiceModel, namespace: str) -> int | None:
        """0: private to namespace, 1: exported to it by name, 2: public; None: invisible."""
        export = svc.export_to or self.default_export_to
        if PUBLIC in export:
            return 2
        if NONE in export:
            return None
        if svc.namespace == namespace and (PRIVATE in export or namespace in export):
            return 0
        if namespace in export:
            return 1
        return None

    def visible(self, svc: ServiceModel, namespace: str) -> bool:
        return self._group(svc, namespace) is not None

    def exported_to(self, namespace: str) -> list[ServiceModel]:
        """Candidates for a proxy namespace: private, then explicitly exported, then public."""
        found = self._exported.get(namespace)
        if found is None:
            found = self._ordered(self.services, namespace)
            self._exported[namespace] = found
        return found

    def exported_from(self, namespaces: Iterable[str], to: str) -> list[ServiceModel]:
        """Candidates of `to` restricted to services living in `namespaces` (cheap for `./*`)."""
        pool = [s for ns in set(namespaces) for s in self.by_namespace.get(ns, ())]
        return self._ordered(pool, to)

    def _ordered(self, pool: Iterable[ServiceModel], namespace: str) -> list[ServiceModel]:
        keyed = []
        for svc in pool:
            group = self._group(svc, namespace)
            if group is not None:
                keyed.append(((group, self._rank[id(svc)]), svc))
        keyed.sort(key=lambda item: item[0])
        return [svc for _, svc in keyed]


def _kube_model(svc: Service, domain_suffix: str) -> ServiceModel:
    return from_kube_service(svc, domain_suffix)


def registry_for(view: StoreView, memo: Memo, domain_suffix: str | None = None) -> ServiceRegistry:
    """The registry of one store generation, built once and shared by every proxy."""
    domain_suffix = domain_suffix or view.domain_suffix
    return memo.get(("registry", view, domain_suffix), _build_registry, view, memo, domain_suffix)


# What a registry is made of: a change of anything else (Pods above all) leaves it as it was.
_REGISTRY_KINDS = frozenset({Kind.SERVICE, Kind.SERVICE_ENTRY, Kind.MESH_CONFIG})


def _build_registry(view: StoreView, memo: Memo, domain_suffix: str) -> ServiceRegistry:
    # The last registry and the generation it was made for, kept for good: a push that visits no
    # proxy must not make the next one rebuild it (a new registry means new scopes for everyone).
    key = ("registry-last", domain_suffix)
    held: tuple[ServiceRegistry, object, int] | None = memo.kept(key)
    if held is not None and held[1] is view.lineage:
        changes = view.changes_since(held[2])
        if changes is not None and not changes.kinds() & _REGISTRY_KINDS:
            memo.keep(key, (held[0], view.lineage, view.generation))
            return held[0]
    models: list[ServiceModel] = []
    for svc in view.services:
        # Conversions are memoised per object so a new generation reuses unchanged ones.
        models.append(memo.get(("svc-model", svc, domain_suffix), _kube_model, svc, domain_suffix))
    for se in view.service_entries:
        models.extend(memo.get(("se-model", se), from_service_entry, se))
    export = frozenset(view.mesh.default_service_export_to)
    # The same models (same objects) as the previous generation: the very same registry, so that
    # scopes, and everything memoised on them, carry over (a Pod change touches none of it).
    last = held[0] if held is not None else None
    if (last is not None and last.default_export_to == export and len(last.inputs) == len(models)
            and all(a is b for a, b in zip(last.inputs, models, strict=True))):
        registry = last
    else:
        registry = ServiceRegistry(models, export)
    memo.keep(key, (registry, view.lineage, view.generation))
    return registry


# ------------------------------------------------------------------ endpoints
def _container_port(pod: Pod, name: str) -> int | None:
    for cp in pod.container_ports:
        if cp.name == name:
            return cp.port
    return None


def _pod_usable(pod: Pod, include_not_ready: bool = False) -> bool:
    return bool(pod.ip) and not pod.terminating and (pod.ready or include_not_ready)


def endpoints(view: StoreView, svc: ServiceModel, port: Port) -> tuple[Endpoint, ...]:
    """Upstream hosts of one service port, sorted (EDS content and headless listeners)."""
    out: list[Endpoint] = []
    if svc.is_kubernetes:
        if not svc.selector:
            return ()  # selector-less (or empty, which the API server stores as none): no Endpoints modelled
        for pod in view.pods_selected(svc.namespace, svc.selector):
            if not _pod_usable(pod, svc.publish_not_ready):
                continue
            target = port.target_port
            if target is None:
                number: int | None = port.number
            elif isinstance(target, int):
                number = target
            else:
                number = _container_port(pod, target)
            if number:
                out.append(Endpoint(pod.ip, number))
        return tuple(sorted(set(out)))
    default_port = port.target_port if isinstance(port.target_port, int) else port.number
    if svc.static_endpoints:
        for ep in svc.static_endpoints:
            if ep.address.startswith("unix://"):
                out.append(Endpoint(ep.address, 0, ep.weight or 1))
            else:
                out.append(Endpoint(ep.address, ep.port_for(port.name) or default_port, ep.weight or 1))
        return tuple(out)  # declared order: DNS round robin uses the first
    if svc.selector is not None:
        for pod in view.pods_selected(svc.namespace, svc.selector):
            if _pod_usable(pod):
                out.append(Endpoint(pod.ip, _container_port(pod, port.name) or default_port))
        return tuple(sorted(set(out)))
    if svc.resolution in (Resolution.DNS_LB, Resolution.DNS_ROUND_ROBIN_LB):
        return (Endpoint(svc.hostname, default_port),)  # the host itself is resolved
    return ()


def endpoints_of(view: StoreView, svc: ServiceModel, port: Port, memo: Memo) -> tuple[Endpoint, ...]:
    """`endpoints`, computed once per store generation however many scopes import the service.

    Noted in the memo (`Memo.recording`): a result built from endpoints knows what it read.
    """
    found = memo.get(("endpoints", view, svc, port), endpoints, view, svc, port)
    memo.note((svc, port, found))
    return found
