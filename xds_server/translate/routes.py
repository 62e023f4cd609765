"""RDS, outbound: route "P", sniffed "host:port" routes, unix-socket / HTTP_PROXY routes.

Follows istiod's httproute.go: the egress listener owning the route supplies the services;
each gives a virtual host `host:port` answering every name a client may use (FQDN, FQDN.,
short names relative to the proxy's DNS domain, VIPs); a catch-all virtual host
(allow_any / block_all) ends every non-sniffed route. A name the server cannot interpret gets
an empty RouteConfiguration, as istiod answers it.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf import wrappers_pb2

from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.scope import OutboundPolicy, ProxyTraits, Scope
from xds_server.mesh.services import UNSPECIFIED_IP, Resolution, ServiceModel
from xds_server.resources import Built, TypeUrl, length_delimited
from xds_server.translate import envoy

MAX_DIRECT_RESPONSE_BODY = 1048576
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"


@dataclass(frozen=True, slots=True)
class VirtualHostSpec:
    name: str
    domains: tuple[str, ...]
    cluster: str
    operation: str


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
def route_spec(scope: Scope, traits: ProxyTraits, route_name: str) -> RouteSpec | None:
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
    per_port: dict[int, list[tuple[ServiceModel, int]]] = {}
    for svc in services:
        if not svc.builds_config:
            continue
        for port in svc.ports:
            if listener_port and port.number != listener_port:
                continue
            per_port.setdefault(port.number, []).append((svc, port.number))
    vhosts = _virtual_hosts(per_port, listener_port, traits.dns_domain)
    if sniffed:
        vhosts = _for_sniffed(vhosts, parsed.host, route_name)
    vhosts.sort(key=lambda v: v.name)
    return RouteSpec(route_name, tuple(vhosts), None if sniffed else scope.policy, match_port=listener_port == 0)


def _virtual_hosts(per_port: dict[int, list[tuple[ServiceModel, int]]], listener_port: int,
                   proxy_domain: str) -> list[VirtualHostSpec]:
    known_fqdn: set[str] = set()
    for entries in per_port.values():
        for svc, port in entries:
            known_fqdn.update((names.virtual_host(svc.hostname, port), svc.hostname))
    used_names: set[str] = set()
    used_domains: set[str] = set()
    out: list[VirtualHostSpec] = []
    for port in sorted(per_port):
        for svc, number in sorted(per_port[port], key=lambda item: item[0].hostname):
            name = names.virtual_host(svc.hostname, number)
            if name in used_names:
                continue
            used_names.add(name)
            domains, alt = vhost_domains(svc, number, listener_port == 0, proxy_domain)
            kept = []
            for d in domains:
                if d.lower() in used_domains or (d in alt and d in known_fqdn):
                    continue
                kept.append(d)
                used_domains.add(d.lower())
            if listener_port == 0 and number != 80:
                # Merged routes (unix socket, HTTP proxy): only `name:port` forms for non-80 ports.
                kept = [d for d in kept if ":" in d]
            if kept:
                out.append(VirtualHostSpec(name, tuple(kept), names.outbound_cluster(number, svc.hostname),
                                           f"{svc.hostname}:{number}/*"))
    return out


def _for_sniffed(vhosts: list[VirtualHostSpec], host: str, route_name: str) -> list[VirtualHostSpec]:
    """A sniffed VIP listener's route holds only its service, answering any Host."""
    found = [v for v in vhosts if route_name in v.domains or host in v.domains]
    if len(found) == 1:
        v = found[0]
        return [VirtualHostSpec(v.name, ("*",), v.cluster, v.operation)]
    return found


# ------------------------------------------------------------------ protobuf
def _service_route(v: VirtualHostSpec) -> rc.Route:
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        decorator=rc.Decorator(operation=v.operation),
        route=rc.RouteAction(
            cluster=v.cluster,
            timeout=envoy.duration(0),
            max_stream_duration=rc.RouteAction.MaxStreamDuration(
                max_stream_duration=envoy.duration(0), grpc_timeout_header_max=envoy.duration(0)),
            retry_policy=rc.RetryPolicy(
                retry_on=RETRY_ON,
                num_retries=envoy.u32(2),
                retry_host_predicate=[rc.RetryPolicy.RetryHostPredicate(
                    name=PREVIOUS_HOSTS, typed_config=envoy.pack(previous_hosts_pb2.PreviousHostsPredicate()))],
                host_selection_retry_max_attempts=5,
            ),
        ),
    )


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
    vhost = rc.VirtualHost(name=v.name, domains=list(v.domains), routes=[_service_route(v)],
                           include_request_attempt_count=True)
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
    spec = route_spec(scope, traits, name)
    if spec is None:
        return empty_route(name, memo)
    return memo.get(("rds", spec), build_route, spec, memo)
