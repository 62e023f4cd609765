"""VirtualService tcp/tls routes in outbound listeners, and DestinationRule fields on tcp_proxy
(istiod's tls.go buildSidecarOutbound{TCP,TLS}FilterChainOpts, networkfilter.go)."""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from tests.unit.translate.outbound_support import (
    destination_rule,
    listener,
    mesh,
    pod,
    proxy,
    rds_name,
    service_entry,
    sidecar,
    snap,
    svc,
    view_of,
    virtual_service,
)
from xds_server.resources import TypeUrl
from xds_server.translate import Memo

FRONT = "front.default.svc.cluster.local"
V1 = "tcp-v1.default.svc.cluster.local"
V2 = "tcp-v2.default.svc.cluster.local"
TCP = "[{name: tcp, port: 9000}]"
FRONT_VIP = "10.96.0.10"


def vs(spec: str, *, name: str = "vs", ns: str = "default", created: int = 0,
       api_version: str = "networking.istio.io/v1") -> str:
    return virtual_service(spec, name=name, ns=ns, created=created, api=api_version)


def dr(spec: str, *, name: str = "dr", ns: str = "default", created: int = 0) -> str:
    return destination_rule(spec, name=name, ns=ns, created=created)


def services(front_ports: str = TCP) -> tuple[str, ...]:
    return (svc("front", ip=FRONT_VIP, ports=front_ports), svc("tcp-v1", ip="10.96.0.11", ports=TCP),
            svc("tcp-v2", ip="10.96.0.12", ports=TCP))


def tcp_proxy(chain: listener_components_pb2.FilterChain) -> tcp_proxy_pb2.TcpProxy:
    out = tcp_proxy_pb2.TcpProxy()
    chain.filters[-1].typed_config.Unpack(out)
    return out


def targets(chain: listener_components_pb2.FilterChain) -> dict[str, int]:
    config = tcp_proxy(chain)
    if config.cluster:
        return {config.cluster: 1}
    return {c.name: c.weight for c in config.weighted_clusters.clusters}


def config_of(chain: listener_components_pb2.FilterChain) -> str:
    md = chain.metadata.filter_metadata.get("istio")
    return md.fields["config"].string_value if md is not None else ""


def prefixes(chain: listener_components_pb2.FilterChain) -> list[str]:
    return [f"{r.address_prefix}/{r.prefix_len.value}" for r in chain.filter_chain_match.prefix_ranges]


def front_listener(*texts: str, p: Any = None, port: int = 9000) -> listener_pb2.Listener:
    return listener(snap(view_of(*texts), p), f"{FRONT_VIP}_{port}")


# ------------------------------------------------------------------ tcp: destinations
def test_weighted_tcp_route_drops_zero_weights_and_names_the_virtual_service() -> None:
    lis = front_listener(*services(), vs("""
hosts: [front]
tcp:
- route:
  - {destination: {host: tcp-v1}, weight: 70}
  - {destination: {host: tcp-v2}, weight: 30}
  - {destination: {host: front}, weight: 0}
""", name="split"))
    (chain,) = lis.filter_chains
    assert not lis.HasField("default_filter_chain")
    config = tcp_proxy(chain)
    assert config.stat_prefix == "split.default"
    assert [(c.name, c.weight) for c in config.weighted_clusters.clusters] == [
        (f"outbound|9000||{V1}", 70), (f"outbound|9000||{V2}", 30)]
    assert config_of(chain) == "/apis/networking.istio.io/v1/namespaces/default/virtual-service/split"
    assert not chain.HasField("filter_chain_match")


def test_single_destination_is_a_plain_cluster_with_istios_port_rule() -> None:
    multi = svc("multi", ip="10.96.0.13", ports="[{name: tcp-a, port: 9000}, {name: tcp-b, port: 9100}]")
    single = svc("single", ip="10.96.0.14", ports="[{name: tcp, port: 7000}]")

    def cluster_for(destination: str) -> str:
        lis = front_listener(*services(), multi, single, vs(f"hosts: [front]\ntcp:\n- route: [{{destination: "
                                                           f"{destination}, weight: 100}}]"))
        (chain,) = lis.filter_chains
        config = tcp_proxy(chain)
        assert config.stat_prefix == config.cluster  # one destination: named by its cluster
        return config.cluster

    # No port: the single port of the destination service, else the port being built.
    assert cluster_for("{host: single}") == "outbound|7000||single.default.svc.cluster.local"
    assert cluster_for("{host: multi}") == "outbound|9000||multi.default.svc.cluster.local"
    assert cluster_for("{host: multi, port: {number: 9100}, subset: v2}") == \
        "outbound|9100|v2|multi.default.svc.cluster.local"


def test_virtual_service_for_another_host_or_http_only_changes_nothing() -> None:
    plain = front_listener(*services())
    assert front_listener(*services(), vs("hosts: [tcp-v1]\ntcp: [{route: [{destination: {host: tcp-v2}}]}]")) \
        == plain
    assert front_listener(*services(), vs("hosts: [front]\nhttp: [{route: [{destination: {host: tcp-v2}}]}]")) \
        == plain


def test_rules_of_several_virtual_services_are_walked_in_order_until_a_terminal_one() -> None:
    lis = front_listener(*services(),
                         vs("hosts: [front]\ntcp: [{route: [{destination: {host: tcp-v1}}]}]", name="old"),
                         vs("hosts: ['*.default.svc.cluster.local']\ntcp: [{route: [{destination: {host: tcp-v2}}]}]",
                            name="new", created=1))
    (chain,) = lis.filter_chains
    assert targets(chain) == {f"outbound|9000||{V1}": 1} and config_of(chain).endswith("/old")


# ------------------------------------------------------------------ tcp: matches
def test_static_match_predicates_pick_the_rule_for_this_proxy() -> None:
    texts = (*services(), pod("client-1", ip="10.244.0.100", labels="{app: client, version: v1}"), vs("""
hosts: [front]
tcp:
- match: [{sourceLabels: {version: v2}}]
  route: [{destination: {host: front}}]
- match: [{port: 9100}, {gateways: [some-gateway]}, {sourceNamespace: other}]
  route: [{destination: {host: front}}]
- match: [{sourceLabels: {version: v1}, gateways: [mesh], port: 9000, sourceNamespace: default}]
  route: [{destination: {host: tcp-v1}}]
- route: [{destination: {host: tcp-v2}}]
"""))
    (chain,) = front_listener(*texts, p=proxy("client-1")).filter_chains
    assert targets(chain) == {f"outbound|9000||{V1}": 1}
    # Another proxy (no version label) skips to the catch-all rule.
    (chain,) = front_listener(*texts, p=proxy("other-1", ip="10.244.0.101")).filter_chains
    assert targets(chain) == {f"outbound|9000||{V2}": 1}


def test_proxies_share_a_listener_unless_a_source_label_sets_them_apart() -> None:
    texts = (*services(), pod("a-1", ip="10.244.0.1", labels="{app: a, version: v1}"),
             pod("b-1", ip="10.244.0.2", labels="{app: b, version: v1}"),
             pod("c-1", ip="10.244.0.3", labels="{app: c, version: v2}"),
             vs("hosts: [front]\ntcp:\n- match: [{sourceLabels: {version: v1}}]\n"
                "  route: [{destination: {host: tcp-v1}}]\n- route: [{destination: {host: tcp-v2}}]"))
    view, memo = view_of(*texts), Memo()
    a, b, c = (snap(view, proxy(f"{n}-1", ip=f"10.244.0.{i}"), memo).get(TypeUrl.LISTENER)[f"{FRONT_VIP}_9000"]
               for i, n in enumerate("abc", start=1))
    assert a is b and a is not c
    assert a.payload != c.payload


def test_subnet_matches_get_prefix_chains_before_the_terminal_rule() -> None:
    entry = service_entry("hosts: [db.example.com]\nports: [{number: 5432, name: tcp, protocol: TCP}]\n"
                          "resolution: NONE\nlocation: MESH_EXTERNAL")
    rules = vs("""
hosts: [db.example.com]
tcp:
- match: [{destinationSubnets: [10.1.0.0/16]}, {destinationSubnets: [10.2.0.0/16, 10.3.0.5]}]
  route: [{destination: {host: tcp-v1, port: {number: 9000}}}]
- match: [{destinationSubnets: [10.9.0.0/16], sourceNamespace: other}]
  route: [{destination: {host: front}}]
- route: [{destination: {host: tcp-v2, port: {number: 9000}}}]
""", name="db")
    lis = listener(snap(view_of(*services(), entry, rules)), "0.0.0.0_5432")
    (chain,) = lis.filter_chains
    assert prefixes(chain) == ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.5/32"]
    assert targets(chain) == {f"outbound|9000||{V1}": 1} and config_of(chain) == ""
    assert targets(lis.default_filter_chain) == {f"outbound|9000||{V2}": 1}
    assert config_of(lis.default_filter_chain).endswith("/db")


def test_subnet_matches_alone_keep_the_services_own_chain_as_default() -> None:
    entry = service_entry("hosts: [db.example.com]\nports: [{number: 5432, name: tcp, protocol: TCP}]\n"
                          "resolution: NONE\nlocation: MESH_EXTERNAL")
    rules = vs("hosts: [db.example.com]\ntcp:\n- match: [{destinationSubnets: [10.1.0.0/16]}]\n"
               "  route: [{destination: {host: tcp-v1}}]\n"
               "- match: [{destinationSubnets: [10.1.0.0/16]}]\n  route: [{destination: {host: tcp-v2}}]")
    lis = listener(snap(view_of(*services(), entry, rules)), "0.0.0.0_5432")
    # The repeated subnet would make Envoy reject the listener: the first rule keeps it.
    (chain,) = lis.filter_chains
    assert prefixes(chain) == ["10.1.0.0/16"] and targets(chain) == {f"outbound|9000||{V1}": 1}
    assert targets(lis.default_filter_chain) == {"outbound|5432||db.example.com": 1}


def test_auto_port_tcp_route_is_the_default_chain_beside_http() -> None:
    lis = front_listener(*services(front_ports="[{name: web, port: 9000}]"),
                         vs("hosts: [front]\ntcp: [{route: [{destination: {host: tcp-v1}}]}]"))
    (http,) = lis.filter_chains
    assert rds_name(http) == f"{FRONT}:9000"
    assert targets(lis.default_filter_chain) == {f"outbound|9000||{V1}": 1}


def test_tls_rules_do_not_apply_to_tcp_ports_nor_tcp_rules_to_tls_ports() -> None:
    tls_rule = "tls: [{match: [{sniHosts: [front]}], route: [{destination: {host: tcp-v1}}]}]"
    (chain,) = front_listener(*services(), vs(f"hosts: [front]\n{tls_rule}")).filter_chains
    assert targets(chain) == {f"outbound|9000||{FRONT}": 1}
    https = svc("front", ip=FRONT_VIP, ports="[{name: https, port: 443}]")
    lis = front_listener(https, *services()[1:], vs("hosts: [front]\ntcp: [{route: [{destination: {host: tcp-v1}}]}]"),
                         port=443)
    (chain,) = lis.filter_chains
    assert targets(chain) == {f"outbound|443||{FRONT}": 1}


# ------------------------------------------------------------------ tls
def test_tls_route_chains_match_sni_and_replace_the_services_own_chain() -> None:
    https = svc("front", ip=FRONT_VIP, ports="[{name: https, port: 443}]")
    rules = vs("""
hosts: [front.default.svc.cluster.local, '*.example.com']
tls:
- match: [{sniHosts: [b.example.com, a.example.com]}, {sniHosts: [front.default.svc.cluster.local], port: 443}]
  route: [{destination: {host: tcp-v1, port: {number: 9000}}}]
- match: [{sniHosts: [b.example.com, a.example.com]}, {sniHosts: [c.example.com], sourceNamespace: other}]
  route: [{destination: {host: tcp-v2, port: {number: 9000}}}]
""", name="sni", api_version="networking.istio.io/v1alpha3")
    lis = front_listener(https, *services()[1:], rules, port=443)
    assert [list(c.filter_chain_match.server_names) for c in lis.filter_chains] == [
        ["a.example.com", "b.example.com"], [FRONT]]
    assert all(targets(c) == {f"outbound|9000||{V1}": 1} for c in lis.filter_chains)
    assert config_of(lis.filter_chains[0]) == \
        "/apis/networking.istio.io/v1alpha3/namespaces/default/virtual-service/sni"
    assert [f.name for f in lis.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    # Other names: passthrough, not the service's own cluster.
    assert lis.default_filter_chain.name == "PassthroughFilterChain"
    assert targets(lis.default_filter_chain) == {"PassthroughCluster": 1}


def test_tls_route_on_vipless_entries_keeps_other_entries_sni_chains() -> None:
    entries = [service_entry(f"hosts: [{h}]\nports: [{{number: 443, name: tls, protocol: TLS}}]\nresolution: DNS",
                             name=h.split(".")[0], created=i) for i, h in enumerate(["a.example.com", "b.example.com"])]
    rules = vs("""
hosts: [a.example.com]
tls:
- match: [{sniHosts: [a.example.com], destinationSubnets: [192.0.2.0/24]}]
  route: [{destination: {host: tcp-v1, port: {number: 9000}}}]
- match: [{sniHosts: [a.example.com]}]
  route: [{destination: {host: tcp-v2, port: {number: 9000}}}]
""")
    lis = listener(snap(view_of(*services(), *entries, rules, mesh("REGISTRY_ONLY"))), "0.0.0.0_443")
    got = [(list(c.filter_chain_match.server_names), prefixes(c), targets(c)) for c in lis.filter_chains]
    # As istiod: once an entry named subnets, the later entries of the walk keep them.
    assert got == [(["a.example.com"], ["192.0.2.0/24"], {f"outbound|9000||{V1}": 1}),
                   (["b.example.com"], [], {"outbound|443||b.example.com": 1})]
    assert targets(lis.default_filter_chain) == {"BlackHoleCluster": 1}


# ------------------------------------------------------------------ DestinationRule fields
def test_destination_rule_of_the_first_destination_sets_tcp_proxy_fields() -> None:
    rule = dr("""
host: tcp-v1
trafficPolicy:
  connectionPool: {tcp: {idleTimeout: 90s, maxConnectionDuration: 1h30m}}
  loadBalancer: {consistentHash: {useSourceIp: true}}
  tunnel: {protocol: POST, targetHost: 2001:db8::1, targetPort: 8443}
  portLevelSettings:
  - port: {number: 9000}
    connectionPool: {tcp: {idleTimeout: 5s}}
subsets:
- {name: rr, labels: {v: rr}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
- {name: tunnelled, labels: {v: t}, trafficPolicy: {tunnel: {targetHost: proxy.example.com, targetPort: 3128}}}
""")

    def proxy_for(route: str) -> tcp_proxy_pb2.TcpProxy:
        (chain,) = front_listener(*services(), rule, vs(f"hosts: [front]\ntcp: [{{route: {route}}}]")).filter_chains
        return tcp_proxy(chain)

    top = proxy_for("[{destination: {host: tcp-v1}}]")
    # Top-level policy only (istiod reads no port-level settings here).
    assert top.idle_timeout.seconds == 90 and top.max_downstream_connection_duration.seconds == 5400
    assert [h.WhichOneof("policy_specifier") for h in top.hash_policy] == ["source_ip"]
    assert (top.tunneling_config.hostname, top.tunneling_config.use_post) == ("[2001:db8::1]:8443", True)
    rr = proxy_for("[{destination: {host: tcp-v1, subset: rr}}]")
    assert not rr.hash_policy and not rr.HasField("tunneling_config")  # the subset's own LB; no subset tunnel
    tunnelled = proxy_for("[{destination: {host: tcp-v1, subset: tunnelled}}]")
    assert list(tunnelled.hash_policy) == list(top.hash_policy)
    assert (tunnelled.tunneling_config.hostname, tunnelled.tunneling_config.use_post) == \
        ("proxy.example.com:3128", False)
    weighted = proxy_for("[{destination: {host: tcp-v1, subset: tunnelled}, weight: 1}, "
                         "{destination: {host: tcp-v2}, weight: 1}]")
    assert weighted.idle_timeout.seconds == 90 and weighted.tunneling_config.hostname == "[2001:db8::1]:8443"
    other_first = proxy_for("[{destination: {host: tcp-v2}, weight: 1}, {destination: {host: tcp-v1}, weight: 1}]")
    assert not other_first.HasField("idle_timeout") and not other_first.hash_policy


def test_services_own_chain_takes_its_destination_rule_too() -> None:
    rule = dr("host: front\ntrafficPolicy: {connectionPool: {tcp: {idleTimeout: 0s}}}")
    (chain,) = front_listener(*services(), rule).filter_chains
    config = tcp_proxy(chain)
    assert config.cluster == f"outbound|9000||{FRONT}"
    assert config.HasField("idle_timeout") and config.idle_timeout.seconds == 0  # 0s: no idle timeout


def test_egress_listener_virtual_services_only() -> None:
    """Each egress listener brings its own VirtualServices: one importing only `./front` on
    port 9000 does not see a VirtualService living in another namespace."""
    rules = vs("hosts: [front.default.svc.cluster.local]\ntcp: [{route: [{destination: "
               "{host: tcp-v1.default.svc.cluster.local}}]}]", ns="team")
    own = sidecar("egress: [{hosts: ['./*']}]")
    (chain,) = front_listener(*services(), rules, own).filter_chains
    assert targets(chain) == {f"outbound|9000||{FRONT}": 1}
    both = sidecar("egress: [{hosts: ['./*', 'team/*']}]")
    (chain,) = front_listener(*services(), rules, both).filter_chains
    assert targets(chain) == {f"outbound|9000||{V1}": 1}


def test_most_specific_destination_rule_wins_even_without_tcp_fields() -> None:
    wildcard = dr("host: '*.default.svc.cluster.local'\ntrafficPolicy: {connectionPool: {tcp: {idleTimeout: 30s}}}",
                  name="all")
    exact = dr("host: front\ntrafficPolicy: {loadBalancer: {simple: RANDOM}}", name="front")
    (chain,) = front_listener(*services(), wildcard).filter_chains
    assert tcp_proxy(chain).idle_timeout.seconds == 30
    (chain,) = front_listener(*services(), wildcard, exact).filter_chains
    assert not tcp_proxy(chain).HasField("idle_timeout")  # the exact rule shadows the wildcard one


def test_explicit_egress_port_is_the_port_matched_and_built() -> None:
    """An egress listener on 9100 imports front (which declares 9000 only): the listener is
    front's VIP on 9100, a match on port 9100 applies there, and a destination without port on a
    multi-port service takes 9100."""
    front = svc("front", ip=FRONT_VIP, ports="[{name: tcp, port: 9000}, {name: tcp-alt, port: 9100}]")
    multi = svc("multi", ip="10.96.0.13", ports="[{name: tcp-a, port: 9000}, {name: tcp-b, port: 9100}]")
    rules = vs("hosts: [front]\ntcp:\n- match: [{port: 9000}]\n  route: [{destination: {host: tcp-v1}}]\n"
               "- match: [{port: 9100}]\n  route: [{destination: {host: multi}}]")
    egress = sidecar("egress: [{port: {number: 9100, protocol: TCP, name: t}, hosts: ['./*']}]")
    s = snap(view_of(front, multi, *services()[1:], rules, egress))
    (chain,) = listener(s, f"{FRONT_VIP}_9100").filter_chains
    assert targets(chain) == {"outbound|9100||multi.default.svc.cluster.local": 1}
    assert f"{FRONT_VIP}_9000" not in s.get(TypeUrl.LISTENER)


def test_virtual_service_host_matching_a_wildcard_entry_routes_it() -> None:
    """istio getConfigsForHost uses Name.Matches both ways: a VirtualService for a.wild.example
    applies to the ServiceEntry `*.wild.example`."""
    entry = service_entry("hosts: ['*.wild.example']\nports: [{number: 443, name: tls, protocol: TLS}]\n"
                          "resolution: NONE\nlocation: MESH_EXTERNAL")
    rules = vs("hosts: [a.wild.example]\ntls: [{match: [{sniHosts: [a.wild.example]}], "
               "route: [{destination: {host: tcp-v1, port: {number: 9000}}}]}]")
    lis = listener(snap(view_of(*services(), entry, rules)), "0.0.0.0_443")
    (chain,) = lis.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["a.wild.example"]
    assert targets(chain) == {f"outbound|9000||{V1}": 1}
    assert lis.default_filter_chain.name == "PassthroughFilterChain"


def test_a_bare_address_and_its_slash_32_are_one_match() -> None:
    entry = service_entry("hosts: [db.example.com]\nports: [{number: 5432, name: tcp, protocol: TCP}]\n"
                          "resolution: NONE\nlocation: MESH_EXTERNAL")
    rules = vs("hosts: [db.example.com]\ntcp:\n- match: [{destinationSubnets: [10.1.0.5]}]\n"
               "  route: [{destination: {host: tcp-v1}}]\n"
               "- match: [{destinationSubnets: [10.1.0.5/32]}]\n  route: [{destination: {host: tcp-v2}}]")
    (chain,) = listener(snap(view_of(*services(), entry, rules)), "0.0.0.0_5432").filter_chains
    assert prefixes(chain) == ["10.1.0.5/32"] and targets(chain) == {f"outbound|9000||{V1}": 1}
