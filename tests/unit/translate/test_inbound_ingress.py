"""Sidecar `ingress` entries: chains/listeners per captureMode, binds, defaultEndpoint (istiod's
`listener_inbound.go` buildInboundChainConfigs, `cluster.go` buildInboundClustersFromSidecar).

The seed examples come from Istio's Sidecar reference (seeds/001_*.txt).
"""

from __future__ import annotations

import pytest

from tests.unit.translate.inbound_support import (
    POD_IP,
    build,
    endpoint_address,
    hcm,
    listener_filter_names,
    pod,
    service,
    sidecar,
    sport,
    tcp,
)

ORIGINAL_DST = "envoy.filters.listener.original_dst"


def ingress(*entries: dict, name: str = "default", **extra: object) -> object:
    return sidecar({"ingress": list(entries), **extra}, name=name)


def entry(number: int, protocol: str = "HTTP", **fields: object) -> dict:
    return {"port": {"number": number, "protocol": protocol, "name": f"p{number}"}, **fields}


# ------------------------------------------------------------------ seed examples
def test_seed_ratings_unix_socket_ingress_is_a_virtual_inbound_chain_to_a_pipe_cluster() -> None:
    sc = sidecar("""
workloadSelector: {labels: {app: ratings}}
ingress:
- port: {number: 9080, protocol: HTTP, name: somename}
  defaultEndpoint: unix:///var/run/someuds.sock
egress:
- port: {number: 9080, protocol: HTTP, name: egresshttp}
  hosts: ["prod-us1/*"]
- hosts: ["istio-system/*"]
""", name="ratings", ns="prod-us1")
    ratings = pod("ratings-1", ns="prod-us1", labels={"app": "ratings"})
    r = build(ratings, sidecar_obj=sc, pod_name="ratings-1", ns="prod-us1")
    assert list(r.listeners) == ["virtualInbound"]
    config = hcm(r.chain(f"{POD_IP}_9080"))
    assert config.stat_prefix == f"inbound_{POD_IP}_9080;"
    assert config.route_config.virtual_hosts[0].routes[0].decorator.operation == "ratings.prod-us1:9080/*"
    cluster = r.clusters["inbound|9080||"]
    assert cluster.type == cluster.STATIC
    assert endpoint_address(cluster) == "unix:/var/run/someuds.sock"
    # istiod keeps the 127.0.0.6 source bind even for a pipe (Envoy ignores it there).
    assert cluster.upstream_bind_config.source_address.address == "127.0.0.6"


def test_seed_no_iptables_productpage_binds_instance_ip_and_forwards_to_localhost() -> None:
    sc = sidecar("""
workloadSelector: {labels: {app: productpage}}
ingress:
- port: {number: 9080, protocol: HTTP, name: somename}
  defaultEndpoint: 127.0.0.1:8080
  captureMode: NONE
egress:
- port: {number: 3306, protocol: MYSQL, name: egressmysql}
  captureMode: NONE
  bind: 127.0.0.1
  hosts: ["*/mysql.foo.com"]
""", name="no-ip-tables", ns="prod-us1")
    productpage = pod("productpage-1", ns="prod-us1", labels={"app": "productpage"})
    r = build(productpage, sidecar_obj=sc, pod_name="productpage-1", ns="prod-us1",
              metadata={"INTERCEPTION_MODE": "NONE"})
    assert list(r.listeners) == [f"{POD_IP}_9080"]  # no virtualInbound without capture
    lst = r.listeners[f"{POD_IP}_9080"]
    assert (lst.address.socket_address.address, lst.address.socket_address.port_value) == (POD_IP, 9080)
    assert ORIGINAL_DST not in listener_filter_names(lst)
    assert not lst.HasField("bind_to_port")  # a real socket
    chain = r.chain(f"{POD_IP}_9080", listener=f"{POD_IP}_9080")
    assert chain.filter_chain_match.destination_port.value == 9080
    assert hcm(chain).route_config.virtual_hosts[0].routes[0].route.cluster == "inbound|9080||"
    cluster = r.clusters["inbound|9080||"]
    assert endpoint_address(cluster) == "127.0.0.1:8080"
    assert not cluster.HasField("upstream_bind_config")  # loopback is never captured


def test_seed_partial_iptables_vm_binds_its_explicit_address_next_to_virtual_inbound() -> None:
    sc = sidecar("""
workloadSelector: {labels: {app: productpage}}
ingress:
- bind: 172.16.1.32
  port: {number: 80, protocol: HTTP, name: somename}
  defaultEndpoint: 127.0.0.1:8080
  captureMode: NONE
egress:
- captureMode: IPTABLES
  hosts: ["*/*"]
""", name="partial-ip-tables")
    r = build(pod(labels={"app": "productpage"}), sidecar_obj=sc, metadata={"INTERCEPTION_MODE": "REDIRECT"})
    assert list(r.listeners) == ["virtualInbound", "172.16.1.32_80"]
    assert r.port_chain_names() == []  # the bound entry is not in virtualInbound
    assert r.listeners["172.16.1.32_80"].address.socket_address.address == "172.16.1.32"


def test_seed_connection_pool_per_port_overrides_the_sidecar_default() -> None:
    sc = sidecar("""
workloadSelector: {labels: {app: productpage}}
inboundConnectionPool:
  http: {http1MaxPendingRequests: 1024, http2MaxRequests: 1024, maxRequestsPerConnection: 1024, maxRetries: 100}
ingress:
- port: {number: 80, protocol: HTTP, name: somename}
  connectionPool:
    http: {http1MaxPendingRequests: 1024, http2MaxRequests: 1024, maxRequestsPerConnection: 1024, maxRetries: 100}
    tcp: {maxConnections: 100}
- port: {number: 81, protocol: HTTP, name: other}
""", name="connection-pool-settings")
    r = build(pod(labels={"app": "productpage"}), sidecar_obj=sc)
    t80 = r.clusters["inbound|80||"].circuit_breakers.thresholds[0]
    assert (t80.max_connections.value, t80.max_pending_requests.value, t80.max_requests.value,
            t80.max_retries.value) == (100, 1024, 1024, 100)
    t81 = r.clusters["inbound|81||"].circuit_breakers.thresholds[0]
    assert (t81.max_connections.value, t81.max_retries.value) == (4294967295, 100)


# ------------------------------------------------------------------ which ports, which binds
def test_ingress_entries_replace_the_service_ports() -> None:
    r = build(pod(), service("reviews", sport(9080, "http"), sport(9090, "tcp")),
              sidecar_obj=ingress(entry(8000)))
    assert r.port_chain_names() == [f"{POD_IP}_8000"]
    assert set(r.clusters) == {"inbound|8000||"}


def test_ingress_entry_protocol_decides_the_chain_shape() -> None:
    r = build(pod(), sidecar_obj=ingress(entry(8000, "TCP"), entry(8001, ""), entry(8002, "GRPC")))
    assert tcp(r.chain(f"{POD_IP}_8000")).cluster == "inbound|8000||"
    assert len(r.chains(f"{POD_IP}_8001")) == 2  # sniffed
    assert hcm(r.chain(f"{POD_IP}_8002")).HasField("http2_protocol_options")


@pytest.mark.parametrize(("capture", "mode", "bound"), [
    ("DEFAULT", "REDIRECT", False),
    ("DEFAULT", "TPROXY", False),
    ("DEFAULT", "NONE", True),
    ("IPTABLES", "REDIRECT", False),
    ("NONE", "REDIRECT", True),
    ("NONE", "TPROXY", True),
    ("NONE", "NONE", True),
])
def test_capture_mode_and_interception_mode_decide_bind_to_port(capture: str, mode: str, bound: bool) -> None:
    r = build(pod(), sidecar_obj=ingress(entry(9080, captureMode=capture)), metadata={"INTERCEPTION_MODE": mode})
    assert (f"{POD_IP}_9080" in r.listeners) is bound
    if mode != "NONE":
        assert (r.port_chain_names() == [f"{POD_IP}_9080"]) is not bound
    else:
        assert "virtualInbound" not in r.listeners


def test_iptables_capture_on_a_none_proxy_builds_the_cluster_but_no_listener() -> None:
    r = build(pod(), sidecar_obj=ingress(entry(9080, captureMode="IPTABLES", defaultEndpoint="127.0.0.1:8080")),
              metadata={"INTERCEPTION_MODE": "NONE"})
    assert r.listeners == {}
    assert endpoint_address(r.clusters["inbound|9080||"]) == "127.0.0.1:8080"


def test_default_bind_is_the_first_global_unicast_instance_ip() -> None:
    r = build(pod(ips=("127.0.0.5", "fe80::1", "192.168.3.4")), sidecar_obj=ingress(entry(9080)),
              metadata={"INSTANCE_IPS": "127.0.0.5,fe80::1,192.168.3.4"}, ip="192.168.3.4")
    assert r.port_chain_names() == ["192.168.3.4_9080"]


def test_default_bind_falls_back_to_the_wildcard_without_a_unicast_ip() -> None:
    r = build(pod(ips=("127.0.0.5",)), sidecar_obj=ingress(entry(9080)), ip="127.0.0.5")
    assert r.port_chain_names() == ["0.0.0.0_9080"]


def test_explicit_bind_names_the_virtual_chain() -> None:
    r = build(pod(), sidecar_obj=ingress(entry(9080, bind="0.0.0.0")))
    assert r.port_chain_names() == ["0.0.0.0_9080"]


def test_first_ingress_entry_wins_a_port() -> None:
    r = build(pod(), sidecar_obj=ingress(entry(9080, "TCP", defaultEndpoint="127.0.0.1:1"),
                                         entry(9080, "HTTP", defaultEndpoint="127.0.0.1:2")))
    assert tcp(r.chain(f"{POD_IP}_9080")).cluster == "inbound|9080||"
    assert endpoint_address(r.clusters["inbound|9080||"]) == "127.0.0.1:1"


def test_unprivileged_pod_skips_privileged_bound_ports_but_not_captured_ones() -> None:
    r = build(pod(), sidecar_obj=ingress(entry(80, captureMode="NONE"), entry(81), entry(8080, captureMode="NONE")),
              metadata={"UNPRIVILEGED_POD": "true"})
    assert set(r.listeners) == {"virtualInbound", f"{POD_IP}_8080"}
    assert r.port_chain_names() == [f"{POD_IP}_81"]
    assert {"inbound|80||", "inbound|81||", "inbound|8080||"} == set(r.clusters)


@pytest.mark.parametrize(("bind", "protocol", "skipped"), [
    ("", "HTTP", True),  # would be the wildcard HTTP listener
    ("", "TCP", False),
    ("0.0.0.0", "TCP", True),
    ("10.1.2.3", "HTTP", False),
])
def test_ingress_on_the_status_port_is_skipped_only_when_it_would_be_the_wildcard(
        bind: str, protocol: str, skipped: bool) -> None:
    e = entry(15021, protocol, captureMode="NONE", **({"bind": bind} if bind else {}))
    r = build(pod(), sidecar_obj=ingress(e))
    assert (len(r.listeners) == 1) is skipped  # only virtualInbound left
    assert "inbound|15021||" in r.clusters


def test_ingress_cluster_names_the_service_that_targets_its_port() -> None:
    r = build(pod(), service("reviews", sport(9080, "http", 8080)),
              sidecar_obj=ingress(entry(8080), entry(8081)))
    services = r.clusters["inbound|8080||"].metadata.filter_metadata["istio"]["services"]
    assert [s["host"] for s in services] == ["reviews.default.svc.cluster.local"]
    assert not r.clusters["inbound|8081||"].HasField("metadata")


def test_root_namespace_sidecar_names_chains_after_the_proxy_namespace() -> None:
    root = sidecar({"ingress": [entry(9080)]}, name="default", ns="istio-system")
    r = build(pod(), sidecar_obj=root)
    route = hcm(r.chain(f"{POD_IP}_9080")).route_config.virtual_hosts[0].routes[0]
    assert route.decorator.operation == "default.default:9080/*"


# ------------------------------------------------------------------ defaultEndpoint forms
V4 = (POD_IP,)
V6 = ("fd00::7",)
DUAL = (POD_IP, "fd00::7")


@pytest.mark.parametrize(("ips", "default_endpoint", "expected", "bound_source"), [
    (V4, "", None, "127.0.0.6"),
    (V4, ":8080", None, "127.0.0.6"),
    (V4, "10.9.9.9:8080", None, "127.0.0.6"),  # arbitrary IPs are not supported: passthrough
    (V4, "127.0.0.1:8080", "127.0.0.1:8080", None),
    (V6, "127.0.0.1:8080", "::1:8080", None),  # no IPv4 loopback on an IPv6-only proxy
    (V4, "[::1]:8080", "127.0.0.1:8080", None),  # and the reverse
    (DUAL, "[::1]:8080", "::1:8080", None),
    (V4, "0.0.0.0:8080", f"{POD_IP}:8080", "127.0.0.6"),
    (V6, "0.0.0.0:8080", "127.0.0.1:8080", None),  # no IPv4 instance IP: istiod uses 127.0.0.1
    (DUAL, "[::]:8080", "fd00::7:8080", "127.0.0.6"),
    (V4, "[::]:8080", "::1:8080", None),
    (V4, "unix:///var/run/app.sock", "unix:/var/run/app.sock", "127.0.0.6"),
])
def test_default_endpoint_forms_shape_the_inbound_cluster(
        ips: tuple[str, ...], default_endpoint: str, expected: str | None, bound_source: str | None) -> None:
    e = entry(9080, **({"defaultEndpoint": default_endpoint} if default_endpoint else {}))
    r = build(pod(ips=ips), sidecar_obj=ingress(e), metadata={"INSTANCE_IPS": ",".join(ips)}, ip=ips[0])
    cluster = r.clusters["inbound|9080||"]
    if expected is None:
        assert cluster.type == cluster.ORIGINAL_DST
        assert cluster.lb_policy == cluster.CLUSTER_PROVIDED
        assert not cluster.HasField("load_assignment")
    else:
        assert cluster.type == cluster.STATIC
        assert endpoint_address(cluster) == expected
    if bound_source is None:
        assert not cluster.HasField("upstream_bind_config")
    else:
        assert cluster.upstream_bind_config.source_address.address == bound_source


@pytest.mark.parametrize("default_endpoint", ["127.0.0.1", "127.0.0.1:http", "[::1", "::1:8080"])
def test_unparseable_default_endpoint_builds_no_cluster(default_endpoint: str) -> None:
    r = build(pod(), sidecar_obj=ingress(entry(9080, defaultEndpoint=default_endpoint), entry(9081)))
    assert set(r.clusters) == {"inbound|9081||"}


def test_sidecar_selected_by_labels_applies_its_ingress() -> None:
    labelled = sidecar({"workloadSelector": {"labels": {"app": "reviews"}}, "ingress": [entry(7000)]}, name="x")
    r = build(pod(), labelled)
    assert r.port_chain_names() == [f"{POD_IP}_7000"]
