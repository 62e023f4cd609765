"""RDS, outbound: route "P", sniffed "host:port" routes, unix-socket / HTTP_PROXY routes.

Follows istiod's httproute.go: the egress listener owning the route supplies the services;
each gives a virtual host `host:port` answering every name a client may use (FQDN, FQDN.,
short names relative to the proxy's DNS domain, VIPs); a catch-all virtual host
(allow_any / block_all) ends every non-sniffed route. A name the server cannot interpret gets
an empty RouteConfiguration, as istiod answers it.

VirtualServices (BuildSidecarVirtualHostWrapper): a service bound to one of the egress
listener's VirtualServices gets that VirtualService's routes (translate/http_routes.py) instead
of the default route; its hosts that name no imported service get virtual hosts of their own.
Only HTTP and sniffed service ports get virtual hosts. A DestinationRule consistent hash adds a
hash policy to the routes (translate/route_policy.py).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import protocol
from xds_server.config.hostname import is_wildcarded
from xds_server.config.hostname import matches as host_matches
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.destination_rules import MergedDestinationRule
from xds_server.mesh.rules import policy_hosts
from xds_server.mesh.scope import OutboundPolicy, ProxyTraits, Scope
from xds_server.mesh.services import UNSPECIFIED_IP, Port, Resolution, ServiceModel
from xds_server.mesh.virtual_services import ResolvedVirtualService, virtual_service_for_host
from xds_server.resources import Built, TypeUrl, length_delimited
from xds_server.translate import envoy, http_routes, route_policy

MAX_DIRECT_RESPONSE_BODY = 1048576


@dataclass(frozen=True, slots=True)
class VirtualHostSpec:
    name: str
    domains: tuple[str, ...]
    cluster: str  # the default route's ("" for a VirtualService host that names no service)
    operation: str
    # Serialized routes replacing the default route: a VirtualService's, or the default route
    # with a DestinationRule hash policy. Empty: the plain default route.
    routes: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    vhosts: tuple[VirtualHostSpec, ...]
    catch_all: OutboundPolicy | None  # None for sniffed (host:port) routes
    # Merged routes (unix socket, HTTP proxy) carry `name:port` domains, so the port in Host must
    # take part in matching. istiod sets ignore_port_in_host_matching on these too, which makes
    # every non-80 service unreachable through them (istio/istio#47682); we do not copy that.
    match_port: bool = False


# ------------------------------------------------------------------ domains
@functools.lru_cache(maxsize=65536)  # pure; every route of every scope asks about the same hosts
def _ipv6_compliant(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def _domain_port(domain: str, port: int) -> list[str]:
    """`domain` and, when a port is given, `domain:port` (istiod appendDomainPort)."""
    if port == 0:
        return [_ipv6_compliant(domain)]
    return [_ipv6_compliant(domain), f"{_ipv6_compliant(domain)}:{port}"]


@functools.lru_cache(maxsize=65536)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _kube_alt_hosts(hostname: str, port: int, proxy_domain: str) -> list[str]:
    ih = hostname.find(".svc.")
    if ih <= 0:
        return []
    dot = hostname.find(".")
    if dot + 1 >= len(hostname) or dot + 1 > ih:
        return []
    short, ns_qualified = hostname[:dot], hostname[:ih]
    if ns_qualified[dot + 1:] == proxy_domain[:proxy_domain.find(".svc.")]:
        return [*_domain_port(short, port), *_domain_port(ns_qualified + ".svc", port),
                *_domain_port(ns_qualified, port)]
    return [*_domain_port(ns_qualified, port), *_domain_port(ns_qualified + ".svc", port)]


def alt_virtual_hosts(hostname: str, port: int, proxy_domain: str) -> list[str]:
    """istiod GenerateAltVirtualHosts: the absolute form, then names relative to the proxy domain."""
    out: list[str] = []
    if not _is_ip(hostname):
        out.append(hostname + ".")
    if port:
        out.append(f"{hostname}.:{port}")
    if ".svc." in proxy_domain:
        if hostname.endswith(proxy_domain[proxy_domain.find(".svc."):]):
            out.extend(_kube_alt_hosts(hostname, port, proxy_domain))
        return out
    host_parts, domain_parts = hostname.split("."), proxy_domain.split(".")
    shared: list[str] = []
    for a, b in zip(reversed(host_parts), reversed(domain_parts), strict=False):
        if a != b:
            break
        shared.append(a)
    if not shared:
        return out
    unique = host_parts[:len(host_parts) - len(shared)]
    unique_host = ".".join(unique)
    out.extend(_domain_port(unique_host, port))
    if len(unique) == 2:
        out.extend(_domain_port(f"{unique_host}.{shared[-1]}", port))
    return out


def vhost_domains(svc: ServiceModel, port: int, with_port: bool, proxy_domain: str) -> tuple[list[str], list[str]]:
    """(domains, expanded alternate hosts) for one service port, as generateVirtualHostDomains."""
    suffix_port = port if with_port else 0
    alt = alt_virtual_hosts(svc.hostname, suffix_port, proxy_domain)
    domains = [*_domain_port(svc.hostname, suffix_port), *alt]
    if svc.resolution is Resolution.PASSTHROUGH and svc.is_kubernetes:
        domains += ["*." + d for d in domains]
    # Only the first address: istiod's per-(host, address) copies of a ServiceEntry collide on the
    # vhost name and the later ones are dropped.
    for addr in svc.addresses[:1]:
        if addr and addr != UNSPECIFIED_IP and "/" not in addr:
            domains += _domain_port(addr, suffix_port)
    return domains, alt


# ------------------------------------------------------------------ specs
def route_spec(scope: Scope, traits: ProxyTraits, route_name: str, memo: Memo) -> RouteSpec | None:
    """What route `route_name` holds for this scope; None for a name istiod cannot interpret."""
    parsed = names.parse_route(route_name)
    if parsed.kind == "other":
        return None
    sniffed = parsed.kind == "host_port"
    listener_port = parsed.port
    egress = scope.egress_for_route(listener_port, parsed.bind)
    services = egress.services if egress is not None else ()
    if egress is not None and egress.is_http_proxy:
        listener_port = 0  # an HTTP proxy port serves every port of every imported service
    per_port: dict[int, list[tuple[ServiceModel, Port]]] = {}
    for svc in services:
        if not svc.builds_config:
            continue
        for port in svc.ports:
            if listener_port and port.number != listener_port:
                continue
            per_port.setdefault(port.number, []).append((svc, port))
    selected = egress.virtual_services if egress is not None and scope.rules is not None else ()
    single_ports: dict[str, int] = {}
    if listener_port == 0:
        single_ports = {s.hostname: s.ports[0].number for s in services if len(s.ports) == 1}
    context = _RouteContext(scope, traits, memo, listener_port, single_ports)
    vhosts = _virtual_hosts(per_port, listener_port, traits.dns_domain, selected, context)
    if sniffed:
        vhosts = _for_sniffed(vhosts, parsed.host, route_name)
    vhosts.sort(key=lambda v: v.name)
    return RouteSpec(route_name, tuple(vhosts), None if sniffed else scope.policy, match_port=listener_port == 0)


@dataclass(frozen=True, slots=True)
class _RouteContext:
    """What VirtualService routes and DestinationRule hash policies read besides the services."""

    scope: Scope
    traits: ProxyTraits
    memo: Memo
    listener_port: int
    single_ports: Mapping[str, int] = field(default_factory=dict)  # merged routes: host -> its only port

    def destination_rule(self, hostname: str) -> MergedDestinationRule | None:
        """istio SidecarScope.DestinationRule: rules are resolved for the scope's services only."""
        svc = self.scope.service(hostname)
        if svc is None:
            return None
        return self.scope.destination_rule(hostname, svc.namespace, self.traits)

    def hashing(self, hostname: str | None = None) -> bool:
        """Whether some DestinationRule with a consistent hash could apply (to `hostname`): when
        none can, no lookups are needed."""
        rules = self.scope.rules
        if rules is None:
            return False
        hosts = policy_hosts(rules, _sets_consistent_hash, self.memo)
        if hostname is None:
            return not hosts.empty
        return hosts.may_match(hostname)

    def vs_routes(self, vs: ResolvedVirtualService) -> tuple[bytes, ...]:
        """The VirtualService's serialized routes on this route's port, built once per what they read."""
        hosts = sorted({d.host for d in http_routes.http_destinations(vs) if self.hashing(d.host)})
        rules = tuple(self.destination_rule(h) for h in hosts)
        by_host = dict(zip(hosts, rules, strict=True))
        # Only what the VirtualService's source tests read goes into the key, so scopes of other
        # namespaces and proxies with other labels share its routes.
        tests_namespace, tests_labels = self.memo.get(("rds-vs-source-tests", vs), _source_tests, vs)
        namespace = self.scope.namespace if tests_namespace else ""
        labels = self.traits.labels if tests_labels else ()
        ports: tuple[tuple[str, int], ...] = ()
        if self.single_ports:
            targets = {d.host for d in (*http_routes.http_destinations(vs), *http_routes.mirror_destinations(vs))}
            ports = tuple(sorted((h, p) for h, p in self.single_ports.items() if h in targets))
        return self.memo.get(("rds-vs-routes", vs, self.listener_port, namespace, labels, rules, ports),
                             http_routes.serialized_routes, vs, self.listener_port, namespace, labels,
                             lambda d: route_policy.destination_hash(by_host.get(d.host), d), ports)

    def default_routes(self, svc: ServiceModel, number: int, cluster: str, op: str) -> tuple[bytes, ...]:
        """The default route with a hash policy when the service's DestinationRule hashes, else ()."""
        if not self.hashing(svc.hostname):
            return ()
        consistent = route_policy.service_hash(self.destination_rule(svc.hostname), number)
        if consistent is None:
            return ()
        return (_default_route(cluster, op, consistent.SerializeToString(deterministic=True)),)


def _source_tests(vs: ResolvedVirtualService) -> tuple[bool, bool]:
    """Whether any HTTP match tests the client's namespace, and its labels."""
    matches = [m for rule in vs.spec.http for m in rule.match]
    return any(m.source_namespace for m in matches), any(m.source_labels for m in matches)


def _sets_consistent_hash(spec: pb.DestinationRule) -> bool:
    """Whether a DestinationRule sets a consistent hash anywhere (its `policy_hosts` predicate)."""
    policies = [spec.traffic_policy, *(s.traffic_policy for s in spec.subsets)]
    levels = [lb for p in policies for lb in (p.load_balancer, *(pl.load_balancer for pl in p.port_level_settings))]
    return any(lb.HasField("consistent_hash") for lb in levels)


def _is_http_or_sniffed(port: Port) -> bool:
    return protocol.is_http(port.protocol) or protocol.is_auto(port.protocol)


class _VhostSet:
    """Virtual hosts in istiod's build order: first name and first domain win."""

    def __init__(self, known_fqdn: set[str], listener_port: int) -> None:
        self.known_fqdn = known_fqdn
        self.listener_port = listener_port
        self.used_names: set[str] = set()
        self.used_domains: set[str] = set()
        self.out: list[VirtualHostSpec] = []

    def add(self, name: str, domains: list[str], alt: list[str], number: int, cluster: str, op: str,
            routes: tuple[bytes, ...]) -> None:
        if name in self.used_names:
            return
        self.used_names.add(name)
        kept = []
        for d in domains:
            if d.lower() in self.used_domains or (d in alt and d in self.known_fqdn):
                continue
            kept.append(d)
            self.used_domains.add(d.lower())
        if self.listener_port == 0 and number != 80:
            # Merged routes (unix socket, HTTP proxy): only `name:port` forms for non-80 ports.
            kept = [d for d in kept if ":" in d]
        if kept:
            self.out.append(VirtualHostSpec(name, tuple(kept), cluster, op, routes))


def _bound_services(vs: ResolvedVirtualService, by_host: dict[str, list[tuple[ServiceModel, Port]]],
                    selected: tuple[ResolvedVirtualService, ...],
                    winners: dict[str, ResolvedVirtualService | None],
                    ) -> tuple[list[str], list[tuple[ServiceModel, Port]]]:
    """istio separateVSHostsAndServices: (VS hosts naming no service of the route, the service
    ports it binds). An exact host binds its service; a wildcard host binds the services for
    which this VirtualService holds the most specific host (computeWildcardHostVirtualServiceIndex),
    and counts as a service host as soon as it matches any service. `winners` holds that
    VirtualService per hostname once looked up, for the other VirtualServices of the route."""
    hosts: list[str] = []
    bound: dict[str, list[tuple[ServiceModel, Port]]] = {}
    for host in vs.spec.hosts:
        if not is_wildcarded(host):
            entries = by_host.get(host.lower())
            if entries:
                bound.setdefault(host.lower(), entries)
            else:
                hosts.append(host)
            continue
        found = False
        for hostname, entries in by_host.items():
            if not host_matches(hostname, host):
                continue
            found = True
            if hostname not in winners:
                binding = virtual_service_for_host(selected, hostname)
                winners[hostname] = binding.virtual_service if binding is not None else None
            if winners[hostname] is vs:
                bound.setdefault(hostname, entries)
        if not found:
            hosts.append(host)
    return hosts, [entry for entries in bound.values() for entry in entries]


def _virtual_hosts(per_port: dict[int, list[tuple[ServiceModel, Port]]], listener_port: int, proxy_domain: str,
                   selected: tuple[ResolvedVirtualService, ...], context: _RouteContext) -> list[VirtualHostSpec]:
    """istio BuildSidecarOutboundVirtualHosts: VirtualService-bound hosts first (in the listener's
    VirtualService order), then every other HTTP or sniffed service port with its default route."""
    known_fqdn: set[str] = set()
    for entries in per_port.values():
        for svc, port in entries:
            known_fqdn.update((names.virtual_host(svc.hostname, port.number), svc.hostname))
    vhosts = _VhostSet(known_fqdn, listener_port)
    with_vs: set[str] = set()
    if selected:
        # Every service of the route's port(s), whatever its protocol: a VS host naming one is not
        # a host of its own (istiod's servicesByName); only HTTP and sniffed ports get its routes.
        by_host: dict[str, list[tuple[ServiceModel, Port]]] = {}
        for number in sorted(per_port):
            for svc, port in per_port[number]:
                by_host.setdefault(svc.hostname.lower(), []).append((svc, port))
        winners: dict[str, ResolvedVirtualService | None] = {}
        for vs in selected:
            hosts, matched = _bound_services(vs, by_host, selected, winners)
            bound = [(svc, port) for svc, port in matched if _is_http_or_sniffed(port)]
            numbers = sorted({port.number for _, port in bound})
            if not numbers and listener_port == 80:
                numbers = [80]  # istiod's legacy: a VirtualService binding no service is used on port 80
            if not numbers:
                continue  # no virtual host would carry its routes: they are not built
            routes = context.vs_routes(vs)
            if not routes:
                continue  # nothing for this port: the VirtualService binds nothing here
            for number in numbers:
                for host in hosts:
                    # istiod SidecarIgnorePort: a VS host's only domain is the host itself.
                    vhosts.add(names.virtual_host(host, number), [_ipv6_compliant(host)], [], number, "", "",
                               routes)
                for svc, port in sorted(bound, key=lambda item: item[0].hostname):
                    if port.number != number:
                        continue
                    domains, alt = vhost_domains(svc, number, listener_port == 0, proxy_domain)
                    vhosts.add(names.virtual_host(svc.hostname, number), domains, alt, number,
                               names.outbound_cluster(number, svc.hostname), "", routes)
            with_vs.update(svc.hostname for svc, _ in bound)
    for number in sorted(per_port):
        for svc, port in sorted(per_port[number], key=lambda item: item[0].hostname):
            if svc.hostname in with_vs or not _is_http_or_sniffed(port):
                continue
            domains, alt = vhost_domains(svc, number, listener_port == 0, proxy_domain)
            cluster = names.outbound_cluster(number, svc.hostname)
            op = f"{svc.hostname}:{number}/*"
            routes = context.default_routes(svc, number, cluster, op)
            vhosts.add(names.virtual_host(svc.hostname, number), domains, alt, number, cluster, op, routes)
    return vhosts.out


def _for_sniffed(vhosts: list[VirtualHostSpec], host: str, route_name: str) -> list[VirtualHostSpec]:
    """A sniffed VIP listener's route holds only its service, answering any Host."""
    found = [v for v in vhosts if route_name in v.domains or host in v.domains]
    if len(found) == 1:
        return [replace(found[0], domains=("*",))]
    return found


# ------------------------------------------------------------------ protobuf
def _service_route(cluster: str, op: str) -> rc.Route:
    """istio BuildDefaultHTTPOutboundRoute: every path to the service's cluster, default retries."""
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        decorator=rc.Decorator(operation=op),
        route=rc.RouteAction(
            cluster=cluster,
            timeout=envoy.duration(0),
            max_stream_duration=rc.RouteAction.MaxStreamDuration(
                max_stream_duration=envoy.duration(0), grpc_timeout_header_max=envoy.duration(0)),
            retry_policy=route_policy.default_retry_policy(),
        ),
    )


@functools.lru_cache(maxsize=4096)
def _default_route(cluster: str, op: str, consistent_hash: bytes) -> bytes:
    """The default route with the hash policy of the service's DestinationRule (istio
    hashForService); it keeps the retry host predicate, as istiod's default route does."""
    route = _service_route(cluster, op)
    consistent = route_policy.ConsistentHash.FromString(consistent_hash)
    policy = route_policy.hash_policy(consistent)
    if policy is not None:
        route.route.hash_policy.append(policy)
    encoded: bytes = route.SerializeToString(deterministic=True)
    return encoded


def _catch_all(policy: OutboundPolicy) -> rc.VirtualHost:
    if policy.allow_any:
        action = rc.RouteAction(
            cluster=policy.catch_all_cluster,
            timeout=envoy.duration(0),
            max_stream_duration=rc.RouteAction.MaxStreamDuration(
                max_stream_duration=envoy.duration(0), grpc_timeout_header_max=envoy.duration(0)),
        )
        return rc.VirtualHost(name=names.ALLOW_ANY_VHOST, domains=["*"], include_request_attempt_count=True,
                              routes=[rc.Route(name=names.ALLOW_ANY_VHOST, match=rc.RouteMatch(prefix="/"),
                                               route=action)])
    return rc.VirtualHost(name=names.BLOCK_ALL_VHOST, domains=["*"], include_request_attempt_count=True,
                          routes=[rc.Route(name=names.BLOCK_ALL_VHOST, match=rc.RouteMatch(prefix="/"),
                                           direct_response=rc.DirectResponseAction(status=502))])


def _vhost_entry(v: VirtualHostSpec) -> bytes:
    """One `virtual_hosts` entry of a RouteConfiguration, encoded (field 2)."""
    vhost = rc.VirtualHost(name=v.name, domains=list(v.domains), include_request_attempt_count=True)
    if v.routes:
        for route in v.routes:
            vhost.routes.add().MergeFromString(route)
    else:
        vhost.routes.append(_service_route(v.cluster, v.operation))
    return length_delimited(2, vhost.SerializeToString(deterministic=True))


def build_route(spec: RouteSpec, memo: Memo) -> Built:
    """The route's bytes, assembled from virtual hosts encoded once each.

    A service's virtual host is the same in every scope except its own namespace's (short
    names), so a mesh-wide route per namespace reuses all but a few. The bytes are those of
    SerializeToString(deterministic=True): fields in number order, name (1) before the virtual
    hosts (2) before the rest.
    """
    config = route_pb2.RouteConfiguration(
        name=spec.name,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        max_direct_response_body_size_bytes=envoy.u32(MAX_DIRECT_RESPONSE_BODY),
        ignore_port_in_host_matching=not spec.match_port,
    )
    head = config.SerializeToString(deterministic=True)
    cut = len(length_delimited(1, spec.name.encode())) if spec.name else 0
    entries = [memo.get(("rds-vhost", v), _vhost_entry, v) for v in spec.vhosts]
    if spec.catch_all is not None:
        entries.append(length_delimited(2, _catch_all(spec.catch_all).SerializeToString(deterministic=True)))
    return Built(TypeUrl.ROUTE, spec.name, b"".join([head[:cut], *entries, head[cut:]]))


def build_empty_route(name: str) -> Built:
    return Built.of(TypeUrl.ROUTE, name, route_pb2.RouteConfiguration(
        name=name, validate_clusters=wrappers_pb2.BoolValue(value=False)))


def empty_route(name: str, memo: Memo) -> Built:
    """What istiod answers for a route name it cannot interpret (every request 404 NR)."""
    return memo.get(("rds-empty", name), build_empty_route, name)


def outbound_route(scope: Scope, traits: ProxyTraits, name: str, memo: Memo) -> Built:
    """The route `name` for proxies of this scope; safe to call for any name Envoy asks for."""
    spec = route_spec(scope, traits, name, memo)
    if spec is None:
        return empty_route(name, memo)
    return memo.get(("rds", spec), build_route, spec, memo)
