"""Outbound CDS/EDS/LDS/RDS shapes for one proxy, and what is shared or rebuilt between proxies."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.unit.translate.outbound_support import (
    assignment,
    cluster,
    endpoint_addresses,
    listener,
    mesh,
    names,
    outbound_clusters,
    pod,
    proxy,
    rds_name,
    route,
    service_entry,
    sidecar,
    snap,
    svc,
    tcp_cluster,
    vhost_domains,
    view_of,
)
from xds_server.mesh import names as rnames
from xds_server.mesh import services as services_mod
from xds_server.resources import TypeUrl
from xds_server.translate import Memo

Cluster = cluster_pb2.Cluster
REVIEWS = "reviews.default.svc.cluster.local"


# ------------------------------------------------------------------ clusters and endpoints
def test_kubernetes_service_gets_an_eds_cluster_and_ready_endpoints_only() -> None:
    view = view_of(
        svc("reviews", ports="[{name: http, port: 9080, targetPort: web}]"),
        pod("reviews-1", ip="10.244.0.1", ports="[{name: web, containerPort: 8080}]"),
        pod("reviews-2", ip="10.244.0.2", ports="[{name: web, containerPort: 8081}]"),
        pod("reviews-3", ip="10.244.0.3", ready=False, ports="[{name: web, containerPort: 8080}]"),
        pod("reviews-4", ip="10.244.0.4", terminating=True, ports="[{name: web, containerPort: 8080}]"),
    )
    s = snap(view)
    c = cluster(s, f"outbound|9080||{REVIEWS}")
    assert c.type == Cluster.EDS and c.eds_cluster_config.service_name == c.name
    assert c.lb_policy == Cluster.LEAST_REQUEST
    assert s.get(TypeUrl.CLUSTER)[c.name].refs == (c.name,)
    assert endpoint_addresses(assignment(s, c.name)) == ["10.244.0.1:8080", "10.244.0.2:8081"]
    assert not s.dangling()


def test_fixed_clusters_are_always_present() -> None:
    s = snap(view_of())
    got = names(s, TypeUrl.CLUSTER)
    assert {"BlackHoleCluster", "PassthroughCluster", "InboundPassthroughCluster"} <= set(got)
    assert cluster(s, "InboundPassthroughCluster").upstream_bind_config.source_address.address == "127.0.0.6"
    assert cluster(s, "PassthroughCluster").type == Cluster.ORIGINAL_DST


def test_service_entry_resolutions_map_to_cluster_types() -> None:
    view = view_of(
        service_entry("hosts: [none.example.com]\nports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]\n"
                      "resolution: NONE", name="none"),
        service_entry("hosts: [static.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
                      "resolution: STATIC\nendpoints: [{address: 1.1.1.1}, {address: 2.2.2.2, ports: {http: 8080}}]",
                      name="static"),
        service_entry("hosts: [dns.example.com]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS",
                      name="dns"),
        service_entry("hosts: [rr.example.com]\nports: [{number: 443, name: tls, protocol: TLS}]\n"
                      "resolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.rr.example.com}]", name="rr"),
    )
    s = snap(view)
    none = cluster(s, "outbound|80||none.example.com")
    assert none.type == Cluster.ORIGINAL_DST and none.lb_policy == Cluster.CLUSTER_PROVIDED
    assert none.original_dst_lb_config.upstream_port_override.value == 8080
    assert cluster(s, "outbound|80||static.example.com").type == Cluster.EDS
    assert endpoint_addresses(assignment(s, "outbound|80||static.example.com")) == ["1.1.1.1:80", "2.2.2.2:8080"]
    dns = cluster(s, "outbound|443||dns.example.com")
    assert dns.type == Cluster.STRICT_DNS and dns.dns_lookup_family == Cluster.V4_ONLY
    assert endpoint_addresses(dns.load_assignment) == ["dns.example.com:443"]  # no endpoints: the host itself
    assert dns.metadata.filter_metadata["istio"]["external"] is True
    rr = cluster(s, "outbound|443||rr.example.com")
    assert rr.type == Cluster.LOGICAL_DNS
    assert endpoint_addresses(rr.load_assignment) == ["a.rr.example.com:443"]
    assert sorted(s.get(TypeUrl.ENDPOINT)) == ["outbound|80||static.example.com"]


def test_service_entry_workload_selector_selects_ready_pods_in_its_namespace_by_port_name() -> None:
    view = view_of(
        service_entry("hosts: [vm.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
                      "resolution: STATIC\nworkloadSelector: {labels: {app: vm}}", name="vm"),
        pod("vm-1", ip="10.244.1.1", labels="{app: vm}", ports="[{name: http, containerPort: 8080}]"),
        pod("vm-2", ip="10.244.1.2", labels="{app: vm}", ready=False),
        pod("vm-3", "other", ip="10.244.1.3", labels="{app: vm}"),
    )
    assert endpoint_addresses(assignment(snap(view), "outbound|80||vm.example.com")) == ["10.244.1.1:8080"]


def test_dns_entry_whose_selector_selects_nothing_has_no_cluster() -> None:
    view = view_of(service_entry("hosts: [x.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
                                 "resolution: DNS\nworkloadSelector: {labels: {app: nobody}}"))
    assert outbound_clusters(snap(view)) == []


def test_udp_ports_and_external_name_services_get_no_cluster() -> None:
    view = view_of(svc("dns", ports="[{name: dns, port: 53, protocol: UDP}]"), """---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: default}
spec: {type: ExternalName, externalName: example.com, ports: [{name: http, port: 80}]}
""")
    assert outbound_clusters(snap(view)) == []


def test_h2_and_auto_ports_set_upstream_protocol_options() -> None:
    view = view_of(svc("g", ports="[{name: grpc, port: 9000}, {name: web, port: 9001}, {name: http, port: 9002}]"))
    s = snap(view)
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    assert key in cluster(s, "outbound|9000||g.default.svc.cluster.local").typed_extension_protocol_options
    assert key in cluster(s, "outbound|9001||g.default.svc.cluster.local").typed_extension_protocol_options
    assert key not in cluster(s, "outbound|9002||g.default.svc.cluster.local").typed_extension_protocol_options


# ------------------------------------------------------------------ listeners
def test_http_tcp_and_auto_ports_get_istio_listener_shapes() -> None:
    view = view_of(svc("reviews", ip="10.96.0.10"),
                   svc("db", ip="10.96.0.11", ports="[{name: tcp, port: 3306}]"),
                   svc("auto", ip="10.96.0.12", ports="[{name: web, port: 8000}]"))
    s = snap(view)
    assert "0.0.0.0_9080" in s.get(TypeUrl.LISTENER)
    http = listener(s, "0.0.0.0_9080")
    assert not http.bind_to_port.value and http.HasField("bind_to_port")
    (chain,) = http.filter_chains
    assert list(chain.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    assert rds_name(chain) == "9080"
    assert http.default_filter_chain.name == "PassthroughFilterChain"
    tcp = listener(s, "10.96.0.11_3306")
    (chain,) = tcp.filter_chains
    assert tcp_cluster(chain) == "outbound|3306||db.default.svc.cluster.local"
    assert not tcp.HasField("default_filter_chain") and not tcp.listener_filters
    auto = listener(s, "10.96.0.12_8000")
    assert rds_name(auto.filter_chains[0]) == "auto.default.svc.cluster.local:8000"
    assert tcp_cluster(auto.default_filter_chain) == "outbound|8000||auto.default.svc.cluster.local"
    assert route(s, "auto.default.svc.cluster.local:8000").virtual_hosts[0].domains == ["*"]
    vo = listener(s, "virtualOutbound")
    assert vo.use_original_dst.value and vo.address.socket_address.port_value == 15001
    assert [c.name for c in vo.filter_chains] == ["virtualOutbound-blackhole", "virtualOutbound-catchall-tcp"]
    assert tcp_cluster(vo.filter_chains[1]) == "PassthroughCluster"
    assert not s.dangling()


def test_vipless_tls_entries_share_one_sni_listener() -> None:
    view = view_of(*(service_entry(f"hosts: [{h}]\nports: [{{number: 443, name: tls, protocol: TLS}}]\n"
                                   "resolution: DNS", name=h.split(".")[0], created=i)
                     for i, h in enumerate(["a.example.com", "b.example.com"])), mesh("REGISTRY_ONLY"))
    lis = listener(snap(view), "0.0.0.0_443")
    assert [list(c.filter_chain_match.server_names) for c in lis.filter_chains] == [["a.example.com"],
                                                                                    ["b.example.com"]]
    assert [f.name for f in lis.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert tcp_cluster(lis.default_filter_chain) == "BlackHoleCluster"


def test_vipless_tcp_entry_owns_the_port_and_later_ones_are_dropped() -> None:
    view = view_of(*(service_entry(f"hosts: [{h}]\nports: [{{number: 5000, name: tcp, protocol: TCP}}]\n"
                                   "resolution: DNS", name=h.split(".")[0], created=i)
                     for i, h in enumerate(["old.example.com", "new.example.com"])))
    (chain,) = listener(snap(view), "0.0.0.0_5000").filter_chains
    assert tcp_cluster(chain) == "outbound|5000||old.example.com"


def test_headless_tcp_service_gets_a_listener_per_pod_except_the_proxy_itself() -> None:
    view = view_of(svc("db", headless=True, ports="[{name: tcp, port: 5432}]"),
                   pod("db-0", ip="10.244.2.1"), pod("db-1", ip="10.244.2.2"))
    other = snap(view, proxy(ip="10.244.9.9"))
    assert {"10.244.2.1_5432", "10.244.2.2_5432"} <= set(other.get(TypeUrl.LISTENER))
    assert cluster(other, "outbound|5432||db.default.svc.cluster.local").type == Cluster.ORIGINAL_DST
    itself = snap(view, proxy("db-0", ip="10.244.2.1"))
    assert "10.244.2.1_5432" not in itself.get(TypeUrl.LISTENER)
    assert "10.244.2.2_5432" in itself.get(TypeUrl.LISTENER)


def test_reserved_ports_are_skipped_on_wildcard_listeners_only() -> None:
    view = view_of(svc("h", ports="[{name: http, port: 15021}]"),
                   svc("t", ip="10.96.0.50", ports="[{name: tcp, port: 15021}]"))
    lds = snap(view).get(TypeUrl.LISTENER)
    assert "0.0.0.0_15021" not in lds
    assert "10.96.0.50_15021" in lds


def test_capture_mode_none_egress_binds_localhost() -> None:
    view = view_of(svc("reviews"), sidecar(
        "egress: [{port: {number: 9080, protocol: HTTP, name: h}, captureMode: NONE, hosts: ['./*']}]"))
    lis = listener(snap(view), "127.0.0.1_9080")
    assert not lis.HasField("bind_to_port")  # a real socket
    (chain,) = lis.filter_chains
    assert not chain.HasField("filter_chain_match") and not lis.HasField("default_filter_chain")
    assert rds_name(chain) == "9080" and not lis.listener_filters


def test_unix_socket_egress_listener_is_a_pipe_with_a_route_named_by_the_bind() -> None:
    bind = "unix:///var/run/app.sock"
    view = view_of(svc("reviews"), sidecar(
        f"egress: [{{port: {{number: 0, protocol: HTTP, name: u}}, bind: '{bind}', hosts: ['./*']}}]"))
    s = snap(view)
    lis = listener(s, f"{bind}_0")
    assert lis.address.pipe.path == "/var/run/app.sock"
    assert rds_name(lis.filter_chains[0]) == bind
    domains = vhost_domains(route(s, bind))
    assert domains[f"{REVIEWS}:9080"][:2] == [f"{REVIEWS}:9080", f"{REVIEWS}.:9080"]
    assert all(":" in d for d in domains[f"{REVIEWS}:9080"])


@pytest.mark.parametrize("egress", [
    "{port: {number: 0, protocol: HTTP, name: u}, bind: 'unix:///var/run/app.sock', hosts: ['./*']}",
    "{port: {number: 15080, protocol: HTTP_PROXY, name: p}, bind: 127.0.0.1, captureMode: NONE, hosts: ['./*']}",
], ids=["unix", "http-proxy"])
def test_merged_routes_match_the_port_in_host(egress: str) -> None:
    """Their domains are `name:port` (bare names only for port 80): Envoy must not strip the port
    from Host before matching, or `Host: reviews:9080` never finds its virtual host (an e2e
    request over a unix-socket egress listener fell through to the passthrough). Port routes
    keep ignoring the port, as istiod sets it."""
    s = snap(view_of(svc("reviews"), sidecar(f"egress: [{egress}, {{hosts: ['*/*']}}]")))
    name = "unix:///var/run/app.sock" if "unix" in egress else "15080"
    assert route(s, name).ignore_port_in_host_matching is False
    assert route(s, "9080").ignore_port_in_host_matching is True


def test_interception_none_has_no_virtual_listeners_and_binds_everything() -> None:
    view = view_of(svc("reviews"), svc("db", ip="10.96.0.11", ports="[{name: tcp, port: 3306}]"))
    s = snap(view, proxy(metadata={"INTERCEPTION_MODE": "NONE"}))
    lds = s.get(TypeUrl.LISTENER)
    assert "virtualOutbound" not in lds and "virtualInbound" not in lds
    assert {"127.0.0.1_9080", "127.0.0.1_3306"} <= set(lds)


# ------------------------------------------------------------------ routes
def test_vhost_domains_from_the_same_and_another_namespace() -> None:
    view = view_of(svc("reviews", ip="10.96.0.10"))
    same = vhost_domains(route(snap(view), "9080"))
    assert same[f"{REVIEWS}:9080"] == [REVIEWS, f"{REVIEWS}.", "reviews", "reviews.default.svc", "reviews.default",
                                       "10.96.0.10"]
    other = vhost_domains(route(snap(view, proxy(ns="other")), "9080"))
    assert other[f"{REVIEWS}:9080"] == [REVIEWS, f"{REVIEWS}.", "reviews.default", "reviews.default.svc",
                                        "10.96.0.10"]


def test_catch_all_vhost_follows_policy() -> None:
    allow = route(snap(view_of(svc("reviews"))), "9080")
    assert allow.virtual_hosts[-1].name == "allow_any"
    assert allow.virtual_hosts[-1].routes[0].route.cluster == "PassthroughCluster"
    block = route(snap(view_of(svc("reviews"), mesh("REGISTRY_ONLY"))), "9080")
    assert block.virtual_hosts[-1].name == "block_all"
    assert block.virtual_hosts[-1].routes[0].direct_response.status == 502


def test_unknown_route_names_get_an_empty_route() -> None:
    from tests.unit.translate.outbound_support import scope_of
    from xds_server.mesh.scope import ProxyTraits
    from xds_server.translate.routes import outbound_route

    view = view_of(svc("reviews"))
    built = outbound_route(scope_of(view, proxy()), ProxyTraits(), "not-a-route", Memo())
    assert built.name == "not-a-route"
    numeric = outbound_route(scope_of(view, proxy()), ProxyTraits(), "7777", Memo())
    assert numeric.refs == () and numeric.name == "7777"
    from envoy.config.route.v3 import route_pb2

    hosts = route_pb2.RouteConfiguration.FromString(numeric.payload).virtual_hosts
    assert [v.name for v in hosts] == ["allow_any"]  # no service on 7777: catch-all only


# ------------------------------------------------------------------ sharing and incremental rebuilds
def test_proxies_of_one_scope_share_outbound_resources() -> None:
    view = view_of(svc("reviews"), pod("client-1", ip="10.244.0.1", labels="{app: c}"),
                   pod("client-2", ip="10.244.0.2", labels="{app: c}"))
    memo = Memo()
    a = snap(view, proxy("client-1", ip="10.244.0.1"), memo)
    b = snap(view, proxy("client-2", ip="10.244.0.2"), memo)
    assert a.get(TypeUrl.ROUTE) is b.get(TypeUrl.ROUTE)
    assert a.get(TypeUrl.ENDPOINT) is b.get(TypeUrl.ENDPOINT)
    for name, built in a.get(TypeUrl.CLUSTER).items():
        assert b.get(TypeUrl.CLUSTER)[name] is built


def test_adding_a_pod_rebuilds_exactly_one_assignment_and_nothing_for_other_scopes() -> None:
    base = (svc("one", ports="[{name: http, port: 80}]", created=1)
            + svc("two", ports="[{name: http, port: 81}]", created=2)
            + pod("one-1", ip="10.244.0.1")
            + pod("a-1", "ns-a", ip="10.244.5.1", labels="{app: a}")
            + pod("b-1", "ns-b", ip="10.244.6.1", labels="{app: b}")
            + sidecar("egress: [{hosts: ['default/one.default.svc.cluster.local']}]", ns="ns-a")
            + sidecar("egress: [{hosts: ['default/two.default.svc.cluster.local']}]", ns="ns-b"))
    pa, pb = proxy("a-1", "ns-a", "10.244.5.1"), proxy("b-1", "ns-b", "10.244.6.1")
    memo = Memo()
    v1 = view_of(base, generation=1)
    a1, b1 = snap(v1, pa, memo), snap(v1, pb, memo)
    memo.rotate()
    v2 = view_of(base, pod("one-2", ip="10.244.0.2"), generation=2)
    misses = memo.misses
    a2, b2 = snap(v2, pa, memo), snap(v2, pb, memo)

    changed = [(t, n) for t in TypeUrl if t in (TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE)
               for n, built in a2.get(t).items() if a1.get(t).get(n) is not built]
    assert changed == [(TypeUrl.ENDPOINT, "outbound|80||one.default.svc.cluster.local")]
    assert endpoint_addresses(assignment(a2, changed[0][1])) == ["10.244.0.1:80", "10.244.0.2:80"]
    for t in (TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE):
        assert b2.version(t) == b1.version(t)
        assert all(b1.get(t)[n] is built for n, built in b2.get(t).items())
    assert memo.misses > misses  # the new generation was really recomputed


def test_dot_star_sidecar_only_builds_its_namespace_services(monkeypatch: pytest.MonkeyPatch) -> None:
    many = "".join(svc(f"s{i}", f"ns{i % 20}", created=i, ip=f"10.97.{i // 200}.{i % 200 + 1}") for i in range(200))
    mine = "".join(svc(f"m{i}", "mine", created=300 + i, ip=f"10.98.0.{i + 1}") for i in range(3))
    view = view_of(many, mine, sidecar("egress: [{hosts: ['./*']}]", ns="mine"),
                   pod("me-1", "mine", ip="10.244.7.1", labels="{app: me}"))
    calls: list[str] = []
    real = services_mod.endpoints

    def counting(view: Any, svc: Any, port: Any) -> Any:
        calls.append(svc.hostname)
        return real(view, svc, port)

    monkeypatch.setattr(services_mod, "endpoints", counting)
    built: list[str] = []
    from xds_server.translate import clusters as clusters_mod
    real_build = clusters_mod.build_outbound_cluster

    def counting_build(spec: Any) -> Any:
        built.append(spec.name)
        return real_build(spec)

    monkeypatch.setattr(clusters_mod, "build_outbound_cluster", counting_build)
    s = snap(view, proxy("me-1", "mine", "10.244.7.1"))
    assert outbound_clusters(s) == [f"outbound|9080||m{i}.mine.svc.cluster.local" for i in range(3)]
    assert sorted(built) == outbound_clusters(s)
    assert sorted(set(calls)) == [f"m{i}.mine.svc.cluster.local" for i in range(3)]
    assert len(s.get(TypeUrl.LISTENER)) == 3  # 0.0.0.0_9080, virtualOutbound, virtualInbound
    assert rnames.port_route(9080) in s.get(TypeUrl.ROUTE)


def test_service_entry_with_two_addresses_gets_a_listener_per_address_and_one_cluster() -> None:
    view = view_of(service_entry("hosts: [db.example.com]\naddresses: [240.0.0.1, 240.0.0.2]\n"
                                 "ports: [{number: 5432, name: tcp, protocol: TCP}]\nresolution: DNS"))
    s = snap(view)
    assert {"240.0.0.1_5432", "240.0.0.2_5432"} <= set(s.get(TypeUrl.LISTENER))
    assert outbound_clusters(s) == ["outbound|5432||db.example.com"]
