"""virtualInbound and per-port chains from service targets (istiod's `listener_inbound.go`), and
interception modes (INTERCEPTION_MODE REDIRECT, TPROXY, NONE)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from tests.unit.translate.inbound_support import (
    build,
    hcm,
    listener_filter_names,
    pod,
    service,
    sidecar,
    sport,
    tcp,
)
from xds_server.memo import Memo

ORIGINAL_DST = "envoy.filters.listener.original_dst"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def test_virtual_inbound_listens_on_15006_with_blackhole_then_passthrough_chains() -> None:
    r = build(pod())
    assert list(r.listeners) == ["virtualInbound"]
    v = r.virtual
    assert (v.address.socket_address.address, v.address.socket_address.port_value) == ("0.0.0.0", 15006)
    assert v.traffic_direction == base_pb2.INBOUND
    assert v.continue_on_listener_filters_timeout
    assert v.listener_filters_timeout.ToSeconds() == 0
    assert not v.HasField("transparent")
    names = [c.name for c in v.filter_chains]
    assert names == ["virtualInbound-blackhole", "virtualInbound-catchall-http", "virtualInbound"]
    blackhole = v.filter_chains[0]
    assert blackhole.filter_chain_match.destination_port.value == 15006
    assert tcp(blackhole).cluster == "BlackHoleCluster"
    http_pass, tcp_pass = v.filter_chains[1], v.filter_chains[2]
    assert list(http_pass.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert http_pass.filter_chain_match.transport_protocol == "raw_buffer"
    route = hcm(http_pass).route_config.virtual_hosts[0].routes[0]
    assert route.route.cluster == "InboundPassthroughCluster"
    assert tcp_pass.filter_chain_match.transport_protocol == "raw_buffer"
    assert not tcp_pass.filter_chain_match.HasField("destination_port")
    assert tcp(tcp_pass).cluster == "InboundPassthroughCluster"
    assert listener_filter_names(v) == [ORIGINAL_DST, HTTP_INSPECTOR]


def test_http_port_gets_one_plaintext_hcm_chain_with_inline_route() -> None:
    r = build(pod(), service("reviews", sport(9080, "http")))
    chain = r.chain("0.0.0.0_9080")
    m = chain.filter_chain_match
    assert (m.destination_port.value, m.transport_protocol, list(m.application_protocols)) == (9080, "raw_buffer", [])
    config = hcm(chain)
    assert config.stat_prefix == "inbound_0.0.0.0_9080;"
    assert not config.use_remote_address.value
    assert config.forward_client_cert_details == hcm_pb2.HttpConnectionManager.APPEND_FORWARD
    assert not config.HasField("http2_protocol_options")
    rc = config.route_config
    assert (rc.name, rc.validate_clusters.value) == ("inbound|9080||", False)
    (vhost,) = rc.virtual_hosts
    assert list(vhost.domains) == ["*"]
    (route,) = vhost.routes
    assert (route.name, route.match.prefix, route.route.cluster) == ("default", "/", "inbound|9080||")
    assert route.route.timeout.ToSeconds() == 0
    assert route.route.retry_policy.retry_on == "reset-before-request"
    assert route.route.retry_policy.num_retries.value == 2
    # No Istio-only filters on upstream Envoy (it does not have them).
    assert not [f.name for f in config.http_filters if f.name.startswith("istio")]


def test_tcp_port_gets_one_tcp_proxy_chain() -> None:
    r = build(pod(), service("db", sport(3306, "mysql")))
    chain = r.chain("0.0.0.0_3306")
    assert chain.filter_chain_match.transport_protocol == "raw_buffer"
    proxy = tcp(chain)
    assert (proxy.stat_prefix, proxy.cluster) == ("inbound|3306||", "inbound|3306||")


def test_auto_port_gets_a_sniffed_http_chain_and_a_raw_tcp_chain() -> None:
    r = build(pod(), service("reviews", sport(7000, "unnamed")))
    http_chain, tcp_chain = r.chains("0.0.0.0_7000")
    assert list(http_chain.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert hcm(http_chain).route_config.name == "inbound|7000||"
    assert not tcp_chain.filter_chain_match.application_protocols
    assert tcp(tcp_chain).cluster == "inbound|7000||"


def test_grpc_port_has_no_inbound_retry_and_an_h2_codec() -> None:
    r = build(pod(), service("api", sport(50051, "grpc")))
    config = hcm(r.chain("0.0.0.0_50051"))
    assert config.HasField("http2_protocol_options")
    route = config.route_config.virtual_hosts[0].routes[0]
    assert not route.route.HasField("retry_policy")


def test_chains_are_sorted_by_port() -> None:
    r = build(pod(), service("reviews", sport(9080, "http"), sport(80, "tcp-a", 8000), sport(443, "tcp-b", 7000)))
    assert r.port_chain_names() == ["0.0.0.0_7000", "0.0.0.0_8000", "0.0.0.0_9080"]


def test_http_inspector_is_disabled_on_ports_that_do_not_sniff() -> None:
    r = build(pod(), service("reviews", sport(9080, "http"), sport(3306, "mysql"), sport(7000, "unnamed")))
    (inspector,) = [f for f in r.virtual.listener_filters if f.name == HTTP_INSPECTOR]
    rules = inspector.filter_disabled.or_match.rules
    disabled = [(x.destination_port_range.start, x.destination_port_range.end) for x in rules]
    # 7000 (auto) and the port-less passthrough sniff; explicit ports and 15006 do not.
    assert disabled == [(3306, 3307), (9080, 9081), (15006, 15007)]
    assert TLS_INSPECTOR not in listener_filter_names(r.virtual)


def test_tproxy_virtual_inbound_is_transparent_and_keeps_the_source() -> None:
    r = build(pod(), service("reviews", sport(9080, "http")), metadata={"INTERCEPTION_MODE": "TPROXY"})
    v = r.virtual
    assert v.transparent.value
    assert listener_filter_names(v)[:2] == [ORIGINAL_DST, "envoy.filters.listener.original_src"]
    config = original_src_pb2.OriginalSrc()
    v.listener_filters[1].typed_config.Unpack(config)
    assert config.mark == 1337


def test_interception_none_without_ingress_builds_no_inbound_at_all() -> None:
    r = build(pod(), service("reviews", sport(9080, "http")), metadata={"INTERCEPTION_MODE": "NONE"})
    assert r.listeners == {}
    assert r.clusters == {}


def test_interception_none_with_a_sidecar_without_ingress_builds_nothing() -> None:
    sc = sidecar({"egress": [{"hosts": ["./*"]}]})
    r = build(pod(), service("reviews", sport(9080, "http")), sidecar_obj=sc,
              metadata={"INTERCEPTION_MODE": "NONE"})
    assert (r.listeners, r.clusters) == ({}, {})


def test_target_ports_on_reserved_listeners_get_a_cluster_but_no_chain() -> None:
    r = build(pod(), service("weird", sport(15021, "http"), sport(15006, "tcp"), sport(15001, "tcp-x"),
                             sport(9080, "http-ok")))
    assert r.port_chain_names() == ["0.0.0.0_9080"]
    assert {"inbound|15021||", "inbound|15006||", "inbound|15001||", "inbound|9080||"} <= set(r.clusters)


def test_reserved_static_ports_come_from_metadata() -> None:
    r = build(pod(), service("weird", sport(15021, "http"), sport(16000, "http-x")),
              metadata={"ENVOY_STATUS_PORT": "16000"})
    assert r.port_chain_names() == ["0.0.0.0_15021"]


def test_ipv6_only_proxy_listens_on_the_ipv6_wildcard_and_binds_to_6() -> None:
    ip = "fd00::7"
    r = build(pod(ips=(ip,)), service("reviews", sport(9080, "http")), ip=ip)
    assert r.virtual.address.socket_address.address == "::"
    assert r.port_chain_names() == ["::_9080"]
    bind = r.clusters["inbound|9080||"].upstream_bind_config.source_address
    assert bind.address == "::6"


def test_pods_with_the_same_ports_share_virtual_inbound_and_cluster_builts() -> None:
    memo = Memo()
    svc = service("reviews", sport(9080, "http"))
    a = build(pod("reviews-1", ips=("10.0.0.1",)), svc, pod_name="reviews-1", ip="10.0.0.1", memo=memo)
    b = build(pod("reviews-2", ips=("10.0.0.2",)), svc, pod_name="reviews-2", ip="10.0.0.2", memo=memo)
    assert a.parts.listeners[0] is b.parts.listeners[0]
    assert a.parts.clusters[0] is b.parts.clusters[0]
