"""Inbound listeners: `virtualInbound` (15006) and real `<bind>_<port>` Sidecar ingress listeners.

Mirrors `listener_inbound.go`: each arriving port gets a `ChainConfig`, which becomes one or two
filter chains (HTTP -> HCM with an inline route, TCP -> tcp_proxy, auto -> both, TLS-terminated
-> one `{transport_protocol: tls}` chain). Chains go into virtualInbound unless the config binds
its own port. Plaintext only (what istiod builds for PeerAuthentication DISABLE): no mTLS chains,
no Istio-only filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import range_pb2

from xds_server.config import protocol
from xds_server.config.protocol import ListenerClass, Protocol
from xds_server.config.traffic import ServerTls
from xds_server.mesh import names
from xds_server.resources import Built, TypeUrl
from xds_server.translate import envoy, inbound_tls

# istio-iptables' TPROXY setup marks with 1337 and routes that mark via table 133.
TPROXY_MARK = 1337
INBOUND_RETRY_ON = "reset-before-request"
INBOUND_RETRIES = 2


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """Everything one arriving port's filter chains depend on (istiod's inboundChainConfig)."""

    bind: str  # names the chain/listener; the address of a bound listener
    port: int  # the arriving (target) port: destination_port match and cluster name
    service_port: int  # inbound virtual host name and trace decorator
    protocol: Protocol  # after TLS termination (HTTPS -> HTTP, TLS -> TCP)
    hostname: str  # trace decorator host: the service, or `<sidecar>.<ns>` for ingress entries
    bind_to_port: bool = False  # a real listener of its own instead of chains in virtualInbound
    tls: ServerTls | None = None  # servable settings; None = plaintext

    @property
    def cluster(self) -> str:
        return names.inbound_cluster(self.port)

    @property
    def name(self) -> str:
        return names.inbound_chain(self.bind, self.port)

    @property
    def listener_class(self) -> ListenerClass:
        # UDP has no class of its own: istiod gives it the TCP chain shape.
        return protocol.listener_class(self.protocol) or ListenerClass.TCP


def after_tls_termination(p: Protocol) -> Protocol:
    """istio protocol.AfterTLSTermination."""
    return {Protocol.HTTPS: Protocol.HTTP, Protocol.TLS: Protocol.TCP}.get(p, p)


def is_grpc(p: Protocol) -> bool:
    return p in (Protocol.GRPC, Protocol.GRPC_WEB)


# ------------------------------------------------------------------ network filters
def _inbound_route(cluster: str, service_port: int, operation: str, proto: Protocol) -> route_pb2.RouteConfiguration:
    """The inline route of an inbound HCM (`buildSidecarInboundHTTPRouteConfig`)."""
    action = rc_pb2.RouteAction(cluster=cluster, timeout=envoy.duration(0))
    action.max_stream_duration.max_stream_duration.CopyFrom(envoy.duration(0))
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(envoy.duration(0))
    if not is_grpc(proto):
        # Safe to retry: the request never reached the app (e.g. a stale pooled connection).
        action.retry_policy.retry_on = INBOUND_RETRY_ON
        action.retry_policy.num_retries.value = INBOUND_RETRIES
    route = rc_pb2.Route(name="default", match=rc_pb2.RouteMatch(prefix="/"),
                         decorator=rc_pb2.Decorator(operation=operation), route=action)
    vhost = rc_pb2.VirtualHost(name=names.inbound_virtual_host(service_port), domains=["*"], routes=[route])
    config = route_pb2.RouteConfiguration(name=cluster, virtual_hosts=[vhost])
    config.validate_clusters.value = False
    return config


def _hcm(stat_prefix: str, route: route_pb2.RouteConfiguration, proto: Protocol) -> lc_pb2.Filter:
    config = envoy.http_connection_manager_config(stat_prefix, route_config=route)
    # Inbound-only HCM settings the shared builder does not cover.
    config.forward_client_cert_details = hcm_pb2.HttpConnectionManager.APPEND_FORWARD
    details = config.set_current_client_cert_details
    details.subject.value = True
    details.uri = True
    details.dns = True
    if protocol.is_h2(proto):
        config.http2_protocol_options.SetInParent()
    return lc_pb2.Filter(name=envoy.HCM, typed_config=envoy.pack(config))


def _http_filters(cc: ChainConfig) -> list[lc_pb2.Filter]:
    operation = f"{cc.hostname}:{cc.service_port}/*"
    route = _inbound_route(cc.cluster, cc.service_port, operation, cc.protocol)
    return [_hcm(names.inbound_stat_prefix(cc.bind, cc.port) + ";", route, cc.protocol)]


def _tcp_filters(cc: ChainConfig) -> list[lc_pb2.Filter]:
    return [envoy.tcp_proxy(cc.cluster)]


# ------------------------------------------------------------------ chains
def chains_for(cc: ChainConfig) -> list[lc_pb2.FilterChain]:
    """The filter chains of one arriving port, in istiod's order."""
    if cc.tls is not None:
        http = cc.listener_class is ListenerClass.HTTP
        ctx = inbound_tls.downstream_tls_context(cc.tls, http=http)
        return [lc_pb2.FilterChain(
            name=cc.name,
            filter_chain_match=envoy.filter_chain_match(destination_port=cc.port, transport_protocol=envoy.TLS),
            filters=_http_filters(cc) if http else _tcp_filters(cc),
            transport_socket=envoy.tls_transport_socket(ctx),
        )]
    chains = []
    if cc.listener_class in (ListenerClass.HTTP, ListenerClass.AUTO):
        alpns = envoy.PLAINTEXT_HTTP_ALPNS if cc.listener_class is ListenerClass.AUTO else ()
        chains.append(lc_pb2.FilterChain(
            name=cc.name,
            filter_chain_match=envoy.filter_chain_match(
                destination_port=cc.port, transport_protocol=envoy.RAW_BUFFER, application_protocols=alpns),
            filters=_http_filters(cc),
        ))
    if cc.listener_class in (ListenerClass.TCP, ListenerClass.AUTO):
        chains.append(lc_pb2.FilterChain(
            name=cc.name,
            filter_chain_match=envoy.filter_chain_match(destination_port=cc.port,
                                                        transport_protocol=envoy.RAW_BUFFER),
            filters=_tcp_filters(cc),
        ))
    return chains


def _blackhole_chain() -> lc_pb2.FilterChain:
    """Traffic addressed to 15006 itself would loop: drop it."""
    return lc_pb2.FilterChain(
        name=names.VIRTUAL_INBOUND_BLACKHOLE_CHAIN,
        filter_chain_match=envoy.filter_chain_match(destination_port=names.VIRTUAL_INBOUND_PORT),
        filters=[envoy.tcp_proxy(names.BLACKHOLE_CLUSTER)],
    )


def _passthrough_chains() -> list[lc_pb2.FilterChain]:
    """Any other port: forward unchanged via InboundPassthroughCluster (sniffed HTTP first)."""
    cluster = names.INBOUND_PASSTHROUGH_CLUSTER
    # istiod's passthrough config: service port 0, no hostname, sniffed protocol.
    route = _inbound_route(cluster, 0, ":0/*", Protocol.UNSUPPORTED)
    return [
        lc_pb2.FilterChain(
            name=names.VIRTUAL_INBOUND_CATCHALL_HTTP_CHAIN,
            filter_chain_match=envoy.filter_chain_match(
                transport_protocol=envoy.RAW_BUFFER, application_protocols=envoy.PLAINTEXT_HTTP_ALPNS),
            filters=[_hcm(f"{cluster};", route, Protocol.UNSUPPORTED)],
        ),
        lc_pb2.FilterChain(
            name=names.VIRTUAL_INBOUND_PASSTHROUGH_CHAIN,
            filter_chain_match=envoy.filter_chain_match(transport_protocol=envoy.RAW_BUFFER),
            filters=[envoy.tcp_proxy(cluster)],
        ),
    ]


# ------------------------------------------------------------------ listener filters
def _port_predicate(ports: Sequence[int]) -> lc_pb2.ListenerFilterChainMatchPredicate:
    """Matches connections to any of `ports` (each a [p, p+1) destination range)."""
    rules = [lc_pb2.ListenerFilterChainMatchPredicate(
        destination_port_range=range_pb2.Int32Range(start=p, end=p + 1)) for p in ports]
    if len(rules) == 1:
        return rules[0]
    return lc_pb2.ListenerFilterChainMatchPredicate(
        or_match=lc_pb2.ListenerFilterChainMatchPredicate.MatchSet(rules=rules))


def _inspectors(chains: Iterable[lc_pb2.FilterChain]) -> list[lc_pb2.ListenerFilter]:
    """tls_inspector/http_inspector, disabled on the ports whose chains do not need them
    (`populateListenerFilters`); port 0 stands for the port-less passthrough chains."""
    need: dict[int, tuple[bool, bool]] = {}
    for chain in chains:
        m = chain.filter_chain_match
        port = m.destination_port.value if m.HasField("destination_port") else 0
        tls = m.transport_protocol == envoy.TLS
        http = any(a in envoy.PLAINTEXT_HTTP_ALPNS for a in m.application_protocols)
        old_tls, old_http = need.get(port, (False, False))
        need[port] = (old_tls or tls, old_http or http)
    out = []
    if any(tls for tls, _ in need.values()):
        f = envoy.tls_inspector()
        if need.get(0, (False, False))[0]:
            off = sorted(p for p, (tls, _) in need.items() if p and not tls)
            if off:
                f.filter_disabled.CopyFrom(_port_predicate(off))
        else:
            on = sorted(p for p, (tls, _) in need.items() if p and tls)
            f.filter_disabled.not_match.CopyFrom(_port_predicate(on))
        out.append(f)
    # After the TLS inspector: it sets the transport protocol the HTTP inspector checks.
    if any(http for _, http in need.values()):
        f = envoy.http_inspector()
        off = sorted(p for p, (_, http) in need.items() if not http)
        if off:
            f.filter_disabled.CopyFrom(_port_predicate(off))
        out.append(f)
    return out


def _original_src() -> lc_pb2.ListenerFilter:
    return lc_pb2.ListenerFilter(name=envoy.ORIGINAL_SRC,
                                 typed_config=envoy.pack(original_src_pb2.OriginalSrc(mark=TPROXY_MARK)))


def _listener(name: str, address: str, port: int, chains: list[lc_pb2.FilterChain], *, virtual: bool,
              tproxy: bool, detection_timeout_s: float) -> listener_pb2.Listener:
    """`buildInboundListener`: the virtual listener restores the original destination; real ones don't."""
    lst = listener_pb2.Listener(
        name=name,
        address=envoy.bind_address(address, port),
        traffic_direction=base_pb2.INBOUND,
        continue_on_listener_filters_timeout=True,
        filter_chains=chains,
        listener_filters_timeout=envoy.duration(detection_timeout_s),
    )
    if virtual:
        lst.listener_filters.append(envoy.original_dst())
        if tproxy:
            lst.transparent.value = True
            lst.listener_filters.append(_original_src())
    lst.listener_filters.extend(_inspectors(chains))
    return lst


def build_virtual_inbound(configs: tuple[ChainConfig, ...], wildcard: str, tproxy: bool,
                          detection_timeout_s: float) -> Built:
    """virtualInbound on <wildcard>:15006: blackhole, passthrough, then per-port chains by port."""
    chains = [_blackhole_chain(), *_passthrough_chains()]
    for cc in sorted(configs, key=lambda c: c.port):
        chains.extend(chains_for(cc))
    lst = _listener(names.VIRTUAL_INBOUND, wildcard, names.VIRTUAL_INBOUND_PORT, chains, virtual=True,
                    tproxy=tproxy, detection_timeout_s=detection_timeout_s)
    return Built.of(TypeUrl.LISTENER, names.VIRTUAL_INBOUND, lst)


def build_bound_listener(cc: ChainConfig, detection_timeout_s: float) -> Built:
    """A Sidecar ingress entry that binds its own socket: `<bind>_<port>` at bind:port."""
    lst = _listener(cc.name, cc.bind, cc.port, chains_for(cc), virtual=False, tproxy=False,
                    detection_timeout_s=detection_timeout_s)
    return Built.of(TypeUrl.LISTENER, cc.name, lst)
