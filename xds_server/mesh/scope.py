"""Every Sidecar egress rule in one place: (namespace, Sidecar) -> Scope, computed once and shared.

Follows istio pilot/pkg/model/sidecar.go (ConvertToSidecarScope, selectServices,
GetEgressListenerForRDS) and push_context.go (servicesExportedToNamespace):

* egress hosts `ns/host`, `*/host`, `./host`, `ns/*.suffix` (left-most label wildcard),
  `~ns/host` exclusions (1.31; bare `~` means every namespace);
* a namespace named explicitly is matched only against its own entries, never against `*/`
  entries (istiod's precedence);
* exportTo visibility decides the candidates; one namespace per hostname per egress listener
  (the proxy's namespace, else a Kubernetes Service, else the first candidate);
* an egress listener with a port (not HTTP_PROXY) imports services declaring that port,
  trimmed to it; CDS uses the union of every listener's services (ports merged per namespace);
* route "P" belongs to the first egress listener with port P, else the portless one;
* outbound traffic policy: the Sidecar's if set (`{}` is REGISTRY_ONLY), else MeshConfig's.

Cost follows the Sidecar: without a `*/` import, only the named namespaces' services are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioSidecar
from xds_server.config.istio import CaptureMode, SidecarEgress
from xds_server.config.mesh import ALLOW_ANY
from xds_server.config.protocol import Protocol
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.destination_rules import MergedDestinationRule, destination_rule_for
from xds_server.mesh.host_imports import HostImports
from xds_server.mesh.rules import TrafficRules, traffic_rules
from xds_server.mesh.services import ServiceModel, ServiceRegistry, registry_for
from xds_server.mesh.virtual_services import (
    ResolvedVirtualService,
    VirtualServiceIndex,
    delegate_keys,
    destinations,
    select_virtual_services,
)
from xds_server.store.view import StoreView

DEFAULT_HOSTS = ("*/*",)
# No Sidecar, or one without egress: import every service (istiod's DefaultSidecarScopeForNamespace).
_DEFAULT_EGRESS = (SidecarEgress(None, hosts=DEFAULT_HOSTS),)


# ------------------------------------------------------------------ scope types
@dataclass(frozen=True, slots=True)
class EgressListener:
    """One Sidecar egress entry with the services it imports (trimmed to its port)."""

    index: int
    port: int | None  # None: the portless catch-all; 0: unix domain socket
    protocol: Protocol  # of the Sidecar port; UNSUPPORTED (auto) when empty or portless
    port_name: str
    bind: str
    capture_none: bool  # captureMode NONE
    services: tuple[ServiceModel, ...]
    # The `mesh` VirtualServices this listener imports, in istiod's order (private, exported,
    # public; oldest first): mesh/virtual_services.py select_virtual_services.
    virtual_services: tuple[ResolvedVirtualService, ...] = ()

    @property
    def is_http_proxy(self) -> bool:
        return self.protocol is Protocol.HTTP_PROXY

    @property
    def matches_port(self) -> bool:
        """istio needsPortMatch: explicit non-zero port that is not an HTTP proxy port."""
        return bool(self.port) and not self.is_http_proxy


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    allow_any: bool
    egress_proxy_cluster: str = ""  # only with ALLOW_ANY

    @property
    def catch_all_cluster(self) -> str:
        """Where unknown destinations go: the egress proxy, passthrough, or the black hole."""
        if not self.allow_any:
            return names.BLACKHOLE_CLUSTER
        return self.egress_proxy_cluster or names.PASSTHROUGH_CLUSTER


@dataclass(frozen=True, eq=False)
class Scope:
    """What every proxy of one (namespace, Sidecar) sees outbound, for one store generation."""

    namespace: str
    sidecar: IstioSidecar | None
    egress: tuple[EgressListener, ...]
    services: tuple[ServiceModel, ...]  # union over egress listeners: CDS/EDS
    policy: OutboundPolicy
    rules: TrafficRules | None = field(default=None, repr=False)  # None: no VirtualService/DestinationRule
    _by_host: dict[str, ServiceModel] = field(default_factory=dict, repr=False)
    # What it was built from (registry, namespace, Sidecar, mesh outbound policy): the memo key.
    origin: tuple[object, ...] = field(default=(), repr=False)
    # Namespaces whose services its egress hosts can import at all (None: any namespace, a `*/`
    # entry): a Service or ServiceEntry changing anywhere else cannot change what it imports.
    watched: frozenset[str] | None = field(default=None, repr=False)
    # Its egress hosts as parsed, one per egress listener (the Sidecar's, else `*/*`).
    imports: tuple[HostImports, ...] = field(default=(), repr=False)

    def service(self, hostname: str) -> ServiceModel | None:
        if not self._by_host:
            self._by_host.update((s.hostname, s) for s in self.services)
        return self._by_host.get(hostname)

    @cached_property
    def namespaces(self) -> frozenset[str]:
        """Namespaces of the imported services: a Pod elsewhere changes nothing here."""
        return frozenset(s.namespace for s in self.services)

    def destination_rule(self, hostname: str, service_namespace: str,
                         traits: ProxyTraits) -> MergedDestinationRule | None:
        """The DestinationRule for this scope's proxies (with these traits' labels) and a host."""
        if self.rules is None:
            return None
        return destination_rule_for(self.rules.destination_rules, self.namespace, traits.label_map, hostname,
                                    service_namespace)

    def egress_for_route(self, port: int, bind: str = "") -> EgressListener | None:
        """istio GetEgressListenerForRDS: first listener on that port (unix: same bind), else portless."""
        for e in self.egress:
            if e.port is None:
                return e
            if e.port == port:
                if port == 0 and e.bind != bind:
                    continue
                return e
        return None


# ------------------------------------------------------------------ building
def scope_for(view: StoreView, namespace: str, sidecar: IstioSidecar | None, memo: Memo,
              hint: Scope | None = None) -> Scope:
    """The shared Scope for proxies of `namespace` selected by `sidecar` (None: implicit default).

    Keyed by what a scope is made of (the registry, the Sidecar, the mesh's outbound policy, the
    rules it reads: `rules_read`), not by the generation: while those stay the same objects, so
    does the Scope, across generations (a VirtualService or DestinationRule change leaves the
    scopes that do not read it as they were).
    `hint`, a proxy's last Scope, is taken when it was made of the same (the memo may have
    dropped it while no push needed it).
    """
    registry = registry_for(view, memo)
    rules = traffic_rules(view, memo)
    read: tuple[object, ...] | None = None
    if view.virtual_services or view.destination_rules:
        read = memo.get(("scope-rules", rules, registry, namespace, sidecar), rules_read, rules, registry, namespace,
                        sidecar)
    key = ("scope", registry, namespace, sidecar, view.mesh.outbound_traffic_policy, read)
    if hint is not None and hint.origin == key:
        return memo.get(key, _given, hint)
    return memo.get(key, build_scope, view, namespace, sidecar, memo, key, read)


def _given(value: Scope) -> Scope:
    return value


def rules_read(rules: TrafficRules, registry: ServiceRegistry, namespace: str,
               sidecar: IstioSidecar | None) -> RulesRead:
    """What a scope of (namespace, Sidecar) reads of the rules, as config objects: per egress
    listener the VirtualServices it selects (each with the delegates it names), and the
    DestinationRules of every namespace its lookups can consult (its own, the root namespace, and
    those of the services it can import, VirtualService destinations included: push_context.go
    `destinationRule`). The same objects give the same Scope (the rules' indexes are pure
    functions of them and the MeshConfig, which the registry's identity stands for)."""
    index = rules.virtual_services
    imports, selected = _egress_imports(index, namespace, sidecar)
    selections = tuple(tuple((vs.source, _delegates_named(index, vs)) for vs in listed) for listed in selected)
    root = rules.destination_rules.root_namespace
    only = _import_namespaces(imports)
    namespaces = None if only is None else only | {namespace}
    destination_set = {host for listed in selected for vs in listed for host in destination_hosts(vs.spec)}
    # Lookups run from this namespace (first step: its own rules) for services of the namespaces
    # it can import and of its routes' destinations (second step: their exported rules), then the
    # root namespace's exported rules.
    serving = registry.by_namespace
    owners = set(serving) if namespaces is None else {ns for ns in namespaces if ns in serving}
    if destination_set:
        owners |= {svc.namespace for host in destination_set for svc in registry.by_hostname.get(host, ())}
    owners.add(root)
    exported = rules.destination_rules.exported_sources
    return RulesRead((selections, rules.destination_rules.local_sources.get(namespace, ()),
                      tuple((ns, exported[ns]) for ns in sorted(owners) if ns in exported)), imports, selected)


class RulesRead(tuple[object, ...]):
    """`rules_read`'s answer. Part of the key every proxy's scope is looked up by, so its hash (over
    every rule object it holds) is computed once, not per proxy and push; equal contents still
    make equal keys across generations.

    It also carries what it was read through, for `build_scope` to reuse: the parsed egress hosts
    and each listener's VirtualServices (`_egress_imports`). These are outside the tuple, so not
    part of its equality or hash."""

    _hash: int
    imports: tuple[HostImports, ...]
    selected: tuple[tuple[ResolvedVirtualService, ...], ...]

    def __new__(cls, items: Iterable[object], imports: tuple[HostImports, ...] = (),
                selected: tuple[tuple[ResolvedVirtualService, ...], ...] = ()) -> RulesRead:
        made = super().__new__(cls, items)
        made._hash = tuple.__hash__(made)
        made.imports = imports
        made.selected = selected
        return made

    def __hash__(self) -> int:
        return self._hash


def _delegates_named(index: VirtualServiceIndex, vs: ResolvedVirtualService) -> tuple[object, ...]:
    """The delegates a root names, as objects (None: missing): merged into its routes."""
    found = (index.delegates.get(key) for key in delegate_keys(vs))
    return tuple(delegate.source if delegate is not None else None for delegate in found)


def destination_hosts(spec: pb.VirtualService) -> Iterable[str]:
    """Every destination and mirror host of a (resolved) VirtualService's routes."""
    return (dest.host for dest in destinations(spec))


def _egress_entries(sidecar: IstioSidecar | None) -> tuple[SidecarEgress, ...]:
    return sidecar.egress if sidecar is not None and sidecar.egress else _DEFAULT_EGRESS


def _egress_imports(index: VirtualServiceIndex, namespace: str, sidecar: IstioSidecar | None
                    ) -> tuple[tuple[HostImports, ...], tuple[tuple[ResolvedVirtualService, ...], ...]]:
    """Per egress listener, its hosts parsed and the VirtualServices they select."""
    imports = tuple(HostImports.parse(entry.hosts, namespace) for entry in _egress_entries(sidecar))
    return imports, tuple(select_virtual_services(index, namespace, hosts) for hosts in imports)


def _import_namespaces(imports: Iterable[HostImports]) -> frozenset[str] | None:
    """The namespaces egress hosts can import services of (None: any namespace, a `*/` host)."""
    out: set[str] = set()
    for hosts in imports:
        only = hosts.namespaces()
        if only is None:
            return None
        out |= only
    return frozenset(out)


def build_scope(view: StoreView, namespace: str, sidecar: IstioSidecar | None, memo: Memo,
                origin: tuple[object, ...] = (), read: RulesRead | None = None) -> Scope:
    """The Scope of (namespace, Sidecar); `read`, this generation's `rules_read` for them, gives
    the egress imports and VirtualService selections it already made."""
    registry = registry_for(view, memo)
    rules = traffic_rules(view, memo)
    spec = sidecar.spec if sidecar is not None else None
    entries = _egress_entries(sidecar)
    if read is not None:
        imports, selected = read.imports, read.selected
    else:
        imports, selected = _egress_imports(rules.virtual_services, namespace, sidecar)
    egress = tuple(_egress_listener(i, e, hosts, registry, namespace, vss)
                   for i, (e, hosts, vss) in enumerate(zip(entries, imports, selected, strict=True)))
    watched = _import_namespaces(imports)
    every_namespace = watched is None
    has_rules = bool(view.virtual_services or view.destination_rules)
    # Each listener's own services, then its VirtualServices' destinations (collectImportedServices).
    imported = [group for e in egress for group in (e.services, _virtual_service_destinations(e, registry, namespace))]
    if any(vs.spec.http or vs.spec.tcp or vs.spec.tls for e in egress for vs in e.virtual_services):
        # A Service or ServiceEntry named by a VirtualService destination may appear in any namespace.
        every_namespace = True
    return Scope(namespace, sidecar, egress, _union(imported),
                 _policy(view, spec), rules if has_rules else None,
                 origin=origin,
                 watched=None if every_namespace else watched,
                 imports=imports)


def _egress_listener(index: int, entry: SidecarEgress, hosts: HostImports, registry: ServiceRegistry,
                     namespace: str, virtual_services: tuple[ResolvedVirtualService, ...]) -> EgressListener:
    sidecar_port = entry.port
    listener = EgressListener(
        index=index,
        port=sidecar_port.number if sidecar_port is not None else None,
        protocol=sidecar_port.protocol if sidecar_port is not None else Protocol.UNSUPPORTED,
        port_name=sidecar_port.name if sidecar_port is not None else "",
        bind=entry.bind,
        capture_none=entry.capture_mode == CaptureMode.NONE,
        services=(),
    )
    only = hosts.namespaces()
    candidates = registry.exported_to(namespace) if only is None else registry.exported_from(only, namespace)
    imported: list[ServiceModel] = []
    for svc in candidates:
        if not hosts.selects(svc):
            continue
        if listener.matches_port:
            port = svc.port(listener.port or 0)
            if port is None:
                continue
            svc = svc.with_ports((port,))
        imported.append(svc)
    return replace(listener, services=_one_namespace_per_host(imported, namespace),
                   virtual_services=virtual_services)


def _one_namespace_per_host(imported: list[ServiceModel], namespace: str) -> tuple[ServiceModel, ...]:
    chosen: dict[str, ServiceModel] = {}
    for svc in imported:
        cur = chosen.get(svc.hostname)
        if (cur is None
                or (svc.namespace == namespace and cur.namespace != namespace)
                or (cur.namespace != namespace and svc.is_kubernetes and not cur.is_kubernetes)):
            chosen[svc.hostname] = svc
    return tuple(s for s in imported if chosen[s.hostname].namespace == s.namespace)


def _union(imported: Iterable[Iterable[ServiceModel]]) -> tuple[ServiceModel, ...]:
    """CDS services: first listener to import a host wins; ports merge within one namespace."""
    added: dict[str, ServiceModel] = {}
    for services in imported:
        for svc in services:
            cur = added.get(svc.hostname)
            if cur is None:
                added[svc.hostname] = svc
            elif cur.namespace == svc.namespace:
                extra = tuple(p for p in svc.ports if cur.port(p.number) is None)
                if extra:
                    added[svc.hostname] = cur.with_ports(cur.ports + extra)
    return tuple(added.values())


# ------------------------------------------------------------------ VirtualService destinations
def _virtual_service_destinations(listener: EgressListener, registry: ServiceRegistry,
                                  namespace: str) -> tuple[ServiceModel, ...]:
    """istio sidecar.go collectImportedServices: every destination host of the listener's
    VirtualServices (routes, mirrors, tcp, tls) joins the CDS services even when the egress hosts
    do not import it; listeners and virtual hosts still come from the imported services only.
    A listener with a port takes the service trimmed to it (serviceMatchingListenerPort), else
    the ports the destinations name (serviceMatchingVirtualServicePorts)."""
    out: list[ServiceModel] = []
    for vs in listener.virtual_services:
        for host, ports in _destination_ports(vs.spec, namespace).items():
            svc = _destination_service(registry.by_hostname.get(host, ()), registry, namespace)
            if svc is None or not svc.builds_config:
                continue
            if listener.matches_port:
                port = svc.port(listener.port or 0)
                if port is not None:
                    out.append(svc.with_ports((port,)))
            elif (matched := _matching_ports(svc, ports)) is not None:
                out.append(matched)
    return tuple(out)


def _destination_ports(spec: pb.VirtualService, namespace: str) -> dict[str, set[int]]:
    """istio virtualServiceDestinations: host -> ports named (0: a destination without a port,
    meaning every port). An HTTP rule whose matches all name other source namespaces is skipped."""
    out: dict[str, set[int]] = {}
    for dest in destinations(spec, namespace):
        out.setdefault(dest.host, set()).add(dest.port.number if dest.HasField("port") else 0)
    out.pop("", None)
    return out


def _destination_service(candidates: Iterable[ServiceModel], registry: ServiceRegistry,
                         namespace: str) -> ServiceModel | None:
    """The proxy's namespace's service of that name, else a visible Kubernetes Service, else the
    oldest visible ServiceEntry (PILOT_SIDECAR_PICK_BEST_SERVICE_NAMESPACE)."""
    visible: list[ServiceModel] = []
    for svc in candidates:
        if svc.namespace == namespace:
            return svc
        if registry.visible(svc, namespace):
            visible.append(svc)
    if not visible:
        return None
    return min(visible, key=lambda s: (not s.is_kubernetes, s.creation, s.namespace))


def _matching_ports(svc: ServiceModel, ports: set[int]) -> ServiceModel | None:
    if not ports or 0 in ports:
        return svc
    found = tuple(p for p in svc.ports if p.number in ports)
    if len(found) == len(svc.ports):
        return svc
    return svc.with_ports(found) if found else None  # none of the named ports: no cluster at all


def _policy(view: StoreView, spec: pb.Sidecar | None) -> OutboundPolicy:
    if spec is not None and spec.HasField("outbound_traffic_policy"):
        otp = spec.outbound_traffic_policy
        allow_any = otp.mode == pb.OutboundTrafficPolicy.ALLOW_ANY
        proxy = ""
        if allow_any and otp.HasField("egress_proxy") and otp.egress_proxy.host:
            dest = otp.egress_proxy
            proxy = names.outbound_cluster(dest.port.number, dest.host, dest.subset)
        return OutboundPolicy(allow_any, proxy)
    return OutboundPolicy(view.mesh.outbound_traffic_policy == ALLOW_ANY)


# ------------------------------------------------------------------ proxy traits
@dataclass(frozen=True, slots=True)
class ProxyTraits:
    """The few facts about a proxy that shape its outbound config besides the Scope."""

    interception: str = "REDIRECT"  # REDIRECT | TPROXY | NONE
    ipv6_only: bool = False
    unprivileged: bool = False
    dns_domain: str = "default.svc.cluster.local"
    self_ip: str = ""  # first instance IP: headless listeners skip it (set only when it matters)
    # The proxy's labels whose keys some VirtualService `sourceLabels` or DestinationRule
    # `workloadSelector` tests (mesh/rules.py label_keys), sorted: only these shape outbound config.
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def wildcard(self) -> str:
        return "::" if self.ipv6_only else "0.0.0.0"

    @property
    def localhost(self) -> str:
        return "::1" if self.ipv6_only else "127.0.0.1"

    @property
    def capture(self) -> bool:
        """False for INTERCEPTION_MODE NONE: no virtual listeners, every listener really binds."""
        return self.interception != "NONE"
