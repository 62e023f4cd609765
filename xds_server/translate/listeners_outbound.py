"""LDS, outbound side: virtualOutbound (15001) and the per-port listeners of a Scope, Sidecar egress
listeners with an explicit port, bind or captureMode included.

The algorithm is istiod's buildSidecarOutboundListeners / buildSidecarOutboundListener
(pilot/pkg/networking/core/listener.go, tls.go): for each egress listener in order, for each
imported service port, compute a listener key (bind, port) and merge filter-chain options
into it, resolving HTTP/TCP/auto conflicts the way istiod does (oldest wins, mixes become
sniffing listeners, Mongo/MySQL never mix, portless listeners cannot touch keys created by
explicit-port ones). Each resulting listener is a frozen `ListenerSpec`, which is its memo key.
The network chains of a TCP, TLS or auto service port (VirtualService tcp/tls routes, or the
service's own chain, with DestinationRule tcp_proxy fields) come from tcp_routes.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.mongo_proxy.v3 import mongo_proxy_pb2
from google.protobuf import wrappers_pb2

from xds_server.config import protocol
from xds_server.config.address import is_unix
from xds_server.config.protocol import ListenerClass, Protocol
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.rules import policy_hosts
from xds_server.mesh.scope import ProxyTraits, Scope
from xds_server.mesh.services import UNSPECIFIED_IP, Port, Registry, Resolution, ServiceModel, endpoints_of
from xds_server.resources import Built, TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import envoy, tcp_routes
from xds_server.translate.tcp_routes import TcpProxySpec

MONGO_PROXY = "envoy.filters.network.mongo_proxy"


@dataclass(frozen=True, slots=True)
class ChainOpt:
    """One filter chain: its match and either a tcp_proxy or an RDS name."""

    sni_hosts: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    alpns: tuple[str, ...] = ()
    transport: str = ""
    tcp: TcpProxySpec | None = None  # network chain
    mongo: bool = False
    rds: str = ""  # HTTP chain: HCM with this route name
    config: str = ""  # chain metadata `istio.config`: the VirtualService a tcp/tls route came from

    @property
    def is_http(self) -> bool:
        return bool(self.rds)

    def match_all(self) -> bool:
        return ((not self.sni_hosts or "*" in self.sni_hosts) and not self.alpns and not self.transport
                and not self.cidrs)

    def conflicts_with(self, other: ChainOpt) -> bool:
        """Same runtime match: Envoy would reject both, so istiod keeps the first."""
        return (self.transport == other.transport and self.alpns == other.alpns
                and _sni_set(self.sni_hosts) == _sni_set(other.sni_hosts)
                and _cidr_set(self.cidrs) == _cidr_set(other.cidrs))


def _sni_set(hosts: tuple[str, ...]) -> frozenset[str]:
    return frozenset(h for h in hosts if h != "*")


def _cidr_set(cidrs: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for c in cidrs:
        try:
            net = ipaddress.ip_network(c, strict=False)
        except ValueError:
            continue
        if str(net.network_address) != UNSPECIFIED_IP:
            out.add(str(net))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """Everything one outbound listener's bytes depend on (the memo key)."""

    bind: str
    port: int
    bind_to_port: bool
    chains: tuple[ChainOpt, ...]
    fallthrough_cluster: str  # PassthroughFilterChain target
    detection_timeout_s: float

    @property
    def name(self) -> str:
        return names.listener(self.bind, self.port)

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.rds for c in self.chains if c.rds))


@dataclass(slots=True)
class _Entry:
    port: int
    protocol: Protocol  # as istiod records it: sniffing listeners become UNSUPPORTED
    bind: str
    bind_to_port: bool
    chains: list[ChainOpt]
    locked: bool = False


NO_CONFLICT, HTTP_OVER_TCP, TCP_OVER_HTTP, TCP_OVER_TCP, TCP_OVER_AUTO, AUTO_OVER_HTTP, AUTO_OVER_TCP = range(7)


@dataclass(slots=True)
class _Builder:
    view: StoreView
    scope: Scope
    traits: ProxyTraits
    memo: Memo
    chain_context: tcp_routes.ChainContext
    entries: dict[tuple[str, int], _Entry] = field(default_factory=dict)
    headless_ips: set[str] = field(default_factory=set)
    # The current egress listener's VirtualServices with tcp or tls routes (tcp_routes.py).
    l4_rules: tcp_routes.L4Rules = tcp_routes.NO_L4_RULES

    # ---------------------------------------------------------- per egress listener
    def build(self) -> None:
        t = self.traits
        for egress in self.scope.egress:
            bind_to_port = not t.capture or egress.capture_none or is_unix(egress.bind)
            bind = egress.bind or (t.localhost if bind_to_port else "")
            self.l4_rules = tcp_routes.L4Rules.of(egress.virtual_services)
            if egress.port is not None:
                if not self._can_bind(bind_to_port, bind, egress.port, egress.protocol):
                    continue
                for svc in egress.services:
                    for copy in _address_copies(svc):
                        self._add(copy, bind, bind_to_port, egress.port, egress.protocol)
                continue
            for entry in self.entries.values():
                entry.locked = True  # a portless listener never adds to explicit-port keys
            for svc in (copy for s in egress.services for copy in _address_copies(s)):
                for port in svc.ports:
                    if not self._can_bind(bind_to_port, bind, port.number, port.protocol):
                        continue
                    if (not bind and svc.resolution is Resolution.PASSTHROUGH and svc.address == UNSPECIFIED_IP
                            and (protocol.is_tcp(port.protocol) or protocol.is_auto(port.protocol))):
                        self._add_headless(svc, port, bind_to_port)
                    else:
                        self._add(svc, bind, bind_to_port, port.number, port.protocol)

    def _add_headless(self, svc: ServiceModel, port: Port, bind_to_port: bool) -> None:
        """Headless / NONE services: one listener per endpoint IP instead of a wildcard one."""
        number, proto = port.number, port.protocol
        eps = endpoints_of(self.view, svc, port, self.memo)
        if not svc.is_kubernetes and not eps and svc.selector is None:
            # A plain ServiceEntry NONE: fall back to a wildcard listener on the port.
            self._add(svc, "", bind_to_port, number, proto)
            return
        for ep in eps:
            try:
                ipaddress.ip_address(ep.address)
            except ValueError:
                continue
            self.headless_ips.add(ep.address)
            if ep.address == self.traits.self_ip:
                continue  # the app reaching its own pod IP does not go through this listener
            self._add(svc, ep.address, bind_to_port, number, proto)

    def _can_bind(self, bind_to_port: bool, bind: str, port: int, proto: Protocol) -> bool:
        """istio CanBindToPort: privileged ports on unprivileged pods, reserved wildcard ports."""
        if bind_to_port and 0 < port < 1024 and self.traits.unprivileged:
            return False
        if bind:
            if bind != self.traits.wildcard:
                return True
        elif not protocol.is_http(proto):
            return True
        return port not in names.RESERVED_PORTS

    # ---------------------------------------------------------- one service port
    def _service_address(self, svc: ServiceModel) -> str:
        addr = svc.address
        if svc.registry is Registry.EXTERNAL and self.traits.ipv6_only and addr == UNSPECIFIED_IP:
            return "::"
        return addr

    def _add(self, svc: ServiceModel, bind: str, bind_to_port: bool, number: int, proto: Protocol) -> None:
        if not svc.builds_config:
            return
        lclass = protocol.listener_class(proto)
        if lclass is None:
            return  # UDP
        wildcard = self.traits.wildcard
        cidrs: tuple[str, ...] = ()
        if lclass is ListenerClass.HTTP:
            bind = bind or wildcard
        elif not bind:
            addr = self._service_address(svc)
            if "/" in addr:
                bind, cidrs = wildcard, (addr,)
            else:
                bind = addr
        if bind == wildcard and number in names.RESERVED_PORTS:
            # istiod checks reserved ports before resolving a VIP-less service to the wildcard, and
            # so emits e.g. 0.0.0.0_15006 next to virtualInbound: Envoy rejects the duplicate address.
            return
        key = (bind, number)
        cur = self.entries.get(key)
        if cur is not None and cur.locked:
            return
        recorded = proto
        conflict = NO_CONFLICT
        if proto is Protocol.HTTP_PROXY:
            opts = [self._http_opt(svc, bind, number, lclass)]
        elif lclass is ListenerClass.HTTP:
            if cur is not None:
                if not protocol.is_tcp(cur.protocol):
                    return  # HTTP already there: vhosts come through the shared route
                conflict = HTTP_OVER_TCP
            opt = self._http_opt(svc, bind, number, lclass)
            if bind == wildcard:
                opt = _sniffed(opt)
                recorded = Protocol.UNSUPPORTED  # HTTP chain + passthrough default = sniffing
            opts = [opt]
        elif lclass is ListenerClass.TCP:
            opts = self._tcp_opts(svc, bind, number, proto, cidrs)
            if cur is not None:
                if protocol.is_http(cur.protocol):
                    conflict = TCP_OVER_HTTP
                elif protocol.is_tcp(cur.protocol):
                    conflict = TCP_OVER_TCP
                else:
                    conflict = TCP_OVER_AUTO
        else:  # AUTO
            if cur is not None:
                if protocol.is_http(cur.protocol):
                    conflict = AUTO_OVER_HTTP
                elif protocol.is_tcp(cur.protocol):
                    conflict = AUTO_OVER_TCP
                else:
                    return
            opts = [*self._tcp_opts(svc, bind, number, proto, cidrs),
                    _sniffed(self._http_opt(svc, bind, number, lclass))]
        if cur is not None and conflict != NO_CONFLICT and _well_known_clash(proto, cur.protocol):
            return
        if cur is None or conflict in (NO_CONFLICT, AUTO_OVER_HTTP):
            self.entries[key] = _Entry(number, recorded, bind, bind_to_port, opts)
        elif conflict in (HTTP_OVER_TCP, TCP_OVER_HTTP, AUTO_OVER_TCP):
            _merge(cur, opts)
            cur.protocol = Protocol.UNSUPPORTED
        else:
            _merge(cur, opts)

    def _http_opt(self, svc: ServiceModel, bind: str, number: int, lclass: ListenerClass) -> ChainOpt:
        if number == 0:
            rds = bind  # unix domain socket: the route is named by the bind
        elif lclass is ListenerClass.AUTO and bind != self.traits.wildcard:
            rds = names.host_port_route(svc.hostname, number)  # a route just for this sniffed service
        else:
            rds = names.port_route(number)
        return ChainOpt(rds=rds)

    def _tcp_opts(self, svc: ServiceModel, bind: str, number: int, proto: Protocol,
                  cidrs: tuple[str, ...]) -> list[ChainOpt]:
        """The service's network chains: its VirtualServices' tcp/tls routes, else its default chain."""
        tls = protocol.is_tls(proto)
        sni: tuple[str, ...] = ()
        if tls:
            # The default chain matches the service's name when the address cannot tell it apart.
            addr = self._service_address(svc)
            if "/" in addr:
                addr = ""
            if cidrs or not addr or (addr == self.traits.wildcard and bind == self.traits.wildcard):
                sni = (svc.hostname,)
        chains = tcp_routes.service_chains(self.chain_context, svc, self.l4_rules, number, tls, cidrs, sni)
        mongo = proto is Protocol.MONGO
        return [ChainOpt(sni_hosts=c.sni_hosts, cidrs=c.cidrs, tcp=c.tcp, mongo=mongo, config=c.config)
                for c in chains]

    # ---------------------------------------------------------- result
    def specs(self) -> list[ListenerSpec]:
        fallthrough = self.scope.policy.catch_all_cluster
        timeout = self.view.mesh.protocol_detection_timeout_s
        return [ListenerSpec(e.bind, e.port, e.bind_to_port, tuple(e.chains), fallthrough, timeout)
                for e in self.entries.values()]


def _address_copies(svc: ServiceModel) -> tuple[ServiceModel, ...]:
    """istiod turns a ServiceEntry into one service per (host, address): one listener per address."""
    if len(svc.addresses) <= 1:
        return (svc,)
    return tuple(replace(svc, addresses=(a,)) for a in svc.addresses)


def _sniffed(opt: ChainOpt) -> ChainOpt:
    return ChainOpt(rds=opt.rds, alpns=envoy.PLAINTEXT_HTTP_ALPNS, transport=envoy.RAW_BUFFER)


def _well_known_clash(incoming: Protocol, existing: Protocol) -> bool:
    """Mongo and MySQL never share a port with another protocol (server-first, no sniffing)."""
    special = (Protocol.MONGO, Protocol.MYSQL)
    return (incoming in special or existing in special) and incoming != existing


def _merge(entry: _Entry, incoming: list[ChainOpt]) -> None:
    for opt in incoming:
        if not any(existing.conflicts_with(opt) for existing in entry.chains):
            entry.chains.append(opt)


# ------------------------------------------------------------------ protobuf
def _network_filters(tcp: TcpProxySpec, mongo: bool) -> list[listener_components_pb2.Filter]:
    filters = []
    if mongo:
        filters.append(listener_components_pb2.Filter(
            name=MONGO_PROXY, typed_config=envoy.pack(mongo_proxy_pb2.MongoProxy(stat_prefix=tcp.stat_prefix))))
    filters.append(tcp.filter())
    return filters


def _chain_match(opt: ChainOpt) -> listener_components_pb2.FilterChainMatch:
    return envoy.filter_chain_match(
        transport_protocol=opt.transport,
        application_protocols=opt.alpns,
        server_names=sorted(opt.sni_hosts) if "*" not in opt.sni_hosts else (),
        prefix_ranges=sorted(c for c in opt.cidrs if _cidr_set((c,))),
    )


def build_listener(spec: ListenerSpec) -> Built:
    name = spec.name
    listener = listener_pb2.Listener(
        name=name,
        address=envoy.bind_address(spec.bind, spec.port),
        traffic_direction=base_pb2.OUTBOUND,
        continue_on_listener_filters_timeout=True,
    )
    if not spec.bind_to_port:
        listener.bind_to_port.CopyFrom(wrappers_pb2.BoolValue(value=False))
    if any(c.sni_hosts for c in spec.chains):
        listener.listener_filters.append(envoy.tls_inspector())
    if any(c.alpns for c in spec.chains):
        listener.listener_filters.append(envoy.http_inspector())
        listener.listener_filters_timeout.CopyFrom(envoy.duration(spec.detection_timeout_s))
    else:
        listener.listener_filters_timeout.CopyFrom(envoy.duration(0))
    default_chain = None
    for opt in spec.chains:
        chain = listener_components_pb2.FilterChain()
        if opt.config:
            chain.metadata.CopyFrom(envoy.config_metadata(opt.config))
        if opt.is_http:
            chain.filters.append(envoy.http_connection_manager(names.outbound_http_stat_prefix(spec.bind, spec.port),
                                                               rds=opt.rds))
        elif opt.tcp is not None:
            chain.filters.extend(_network_filters(opt.tcp, opt.mongo))
        if opt.match_all():
            default_chain = chain  # the last match-all chain is the fallback
        else:
            chain.filter_chain_match.CopyFrom(_chain_match(opt))
            listener.filter_chains.append(chain)
    if default_chain is not None and not listener.filter_chains:
        listener.filter_chains.append(default_chain)  # a single chain needs no default
    elif default_chain is not None:
        listener.default_filter_chain.CopyFrom(default_chain)
    else:
        listener.default_filter_chain.CopyFrom(listener_components_pb2.FilterChain(
            name=names.PASSTHROUGH_FILTER_CHAIN,
            filter_chain_match=listener_components_pb2.FilterChainMatch(),
            filters=[envoy.tcp_proxy(spec.fallthrough_cluster)],
        ))
    return Built.of(TypeUrl.LISTENER, name, listener, refs=spec.routes)


# ------------------------------------------------------------------ entry points
@dataclass(frozen=True, slots=True)
class OutboundListeners:
    listeners: tuple[Built, ...]
    routes: tuple[str, ...]  # RDS names the listeners reference, in order
    headless_ips: frozenset[str]  # endpoint IPs that got their own listener


def build_outbound_listeners(view: StoreView, scope: Scope, traits: ProxyTraits, memo: Memo) -> OutboundListeners:
    hosts = policy_hosts(scope.rules, tcp_routes.sets_tcp_proxy_fields, memo)
    builder = _Builder(view, scope, traits, memo, tcp_routes.ChainContext(scope, traits, hosts))
    builder.build()
    built = []
    routes: dict[str, None] = {}
    for spec in builder.specs():
        built.append(memo.get(("lds", spec), build_listener, spec))
        routes.update(dict.fromkeys(spec.routes))
    return OutboundListeners(tuple(built), tuple(routes), frozenset(builder.headless_ips))


def build_virtual_outbound(catch_all_cluster: str, traits: ProxyTraits) -> Built:
    listener = listener_pb2.Listener(
        name=names.VIRTUAL_OUTBOUND,
        address=envoy.socket_address(traits.wildcard, names.VIRTUAL_OUTBOUND_PORT),
        use_original_dst=wrappers_pb2.BoolValue(value=True),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[
            listener_components_pb2.FilterChain(
                name=names.VIRTUAL_OUTBOUND_BLACKHOLE_CHAIN,
                filter_chain_match=envoy.filter_chain_match(destination_port=names.VIRTUAL_OUTBOUND_PORT),
                filters=[envoy.tcp_proxy(names.BLACKHOLE_CLUSTER)],
            ),
            listener_components_pb2.FilterChain(
                name=names.VIRTUAL_OUTBOUND_CATCHALL_CHAIN,
                filters=[envoy.tcp_proxy(catch_all_cluster)],
            ),
        ],
    )
    if traits.interception == "TPROXY":
        listener.transparent.value = True
    return Built.of(TypeUrl.LISTENER, listener.name, listener)


def virtual_outbound(scope: Scope, traits: ProxyTraits, memo: Memo) -> Built:
    cluster = scope.policy.catch_all_cluster
    key = ("lds-virtual-outbound", cluster, traits.wildcard, traits.interception == "TPROXY")
    return memo.get(key, build_virtual_outbound, cluster, traits)
