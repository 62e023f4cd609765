"""Service targets (istiod's `model/context.go` SetServiceTargets): which ports of a workload get inbound
chains and clusters."""

from __future__ import annotations

import json

from tests.unit.translate.inbound_support import POD_IP, build, hcm, pod, service, service_entry, sport, tcp
from xds_server.mesh.proxy import proxy_from_node
from xds_server.mesh.workload import workload_of
from xds_server.store.view import StoreView
from xds_server.translate.inbound_targets import service_targets


def test_numeric_target_port_names_chain_and_cluster_service_port_names_vhost() -> None:
    r = build(pod(), service("reviews", sport(9080, "http", 8080)))
    assert r.port_chain_names() == ["0.0.0.0_8080"]
    assert "inbound|8080||" in r.clusters
    route = hcm(r.chain("0.0.0.0_8080")).route_config
    assert route.name == "inbound|8080||"
    (vhost,) = route.virtual_hosts
    assert vhost.name == "inbound|http|9080"
    assert vhost.routes[0].decorator.operation == "reviews.default.svc.cluster.local:9080/*"


def test_named_target_port_resolves_to_the_pods_container_port() -> None:
    r = build(pod(ports=[(8081, "web")]), service("reviews", sport(80, "http", "web")))
    assert r.port_chain_names() == ["0.0.0.0_8081"]
    assert set(r.clusters) == {"inbound|8081||"}


def test_named_target_port_the_pod_lacks_yields_no_target() -> None:
    r = build(pod(ports=[(8081, "other")]), service("reviews", sport(80, "http", "web")))
    assert r.port_chain_names() == []
    assert r.clusters == {}


def test_unset_target_port_is_the_service_port() -> None:
    r = build(pod(), service("reviews", sport(9080, "http")))
    assert r.port_chain_names() == ["0.0.0.0_9080"]


def test_same_target_port_and_protocol_twice_in_one_service_is_one_target() -> None:
    r = build(pod(), service("reviews", sport(80, "http-a", 8080), sport(81, "http-b", 8080)))
    assert r.port_chain_names() == ["0.0.0.0_8080"]
    # The first service port names the virtual host.
    assert hcm(r.chain("0.0.0.0_8080")).route_config.virtual_hosts[0].name == "inbound|http|80"


def test_oldest_service_owns_a_shared_target_port_and_its_protocol() -> None:
    newer = service("newer", sport(8080, "http"), created=5)
    older = service("older", sport(8080, "tcp"), created=1)
    r = build(pod(), newer, older)
    (chain,) = r.chains("0.0.0.0_8080")
    assert tcp(chain).cluster == "inbound|8080||"
    # Both services share the port: telemetry metadata lists both, oldest first.
    services = r.clusters["inbound|8080||"].metadata.filter_metadata["istio"]["services"]
    assert [s["name"] for s in services] == ["older", "newer"]


def test_services_of_other_namespaces_or_other_labels_are_ignored() -> None:
    r = build(pod(), service("elsewhere", sport(8080, "http"), ns="other"),
              service("others", sport(8081, "http"), selector={"app": "ratings"}))
    assert r.port_chain_names() == []


def test_selectorless_and_empty_selector_services_target_nothing() -> None:
    r = build(pod(), service("manual", sport(8080, "http"), selector=None),
              service("empty", sport(8081, "http"), selector={}))
    assert r.port_chain_names() == []


def test_pod_ports_metadata_resolves_named_ports_when_the_pod_is_unknown() -> None:
    view = StoreView.build(1, [service("reviews", sport(80, "http", "web"))])
    pod_ports = json.dumps([{"name": "web", "containerPort": 8081, "protocol": "TCP"}])
    proxy = proxy_from_node(f"sidecar~{POD_IP}~gone.default~default.svc.cluster.local",
                            {"LABELS": {"app": "reviews"}, "POD_PORTS": pod_ports, "INSTANCE_IPS": POD_IP})
    (target,) = service_targets(view, workload_of(view, proxy))
    assert (target.hostname, target.port, target.target_port) == ("reviews.default.svc.cluster.local", 80, 8081)


def test_udp_service_port_gets_a_tcp_shaped_chain_and_a_cluster() -> None:
    r = build(pod(), service("dns", sport(5353, "dns", l4="UDP")))
    assert tcp(r.chain("0.0.0.0_5353")).cluster == "inbound|5353||"
    assert "inbound|5353||" in r.clusters


def test_service_entry_selecting_the_pod_is_a_target() -> None:
    se = service_entry("""
hosts: [reviews.internal]
ports: [{number: 9000, name: http, protocol: HTTP, targetPort: 8000}]
resolution: STATIC
workloadSelector: {labels: {app: reviews}}
""")
    r = build(pod(), se)
    assert r.port_chain_names() == ["0.0.0.0_8000"]
    vhost = hcm(r.chain("0.0.0.0_8000")).route_config.virtual_hosts[0]
    assert vhost.routes[0].decorator.operation == "reviews.internal:9000/*"


def test_service_entry_selecting_the_pod_uses_its_named_container_port() -> None:
    se = service_entry("""
hosts: [reviews.internal]
ports: [{number: 9000, name: web, protocol: TCP}]
workloadSelector: {labels: {app: reviews}}
""")
    r = build(pod(ports=[(7070, "web")]), se)
    assert r.port_chain_names() == ["0.0.0.0_7070"]


def test_service_entry_static_endpoint_on_the_proxy_ip_is_a_target() -> None:
    se = service_entry(f"""
hosts: [vm.example.com]
ports: [{{number: 3306, name: mysql, protocol: TCP}}]
resolution: STATIC
endpoints: [{{address: 10.0.0.9}}, {{address: {POD_IP}, ports: {{mysql: 13306}}}}]
""")
    r = build(pod(), se)
    assert r.port_chain_names() == ["0.0.0.0_13306"]


def test_service_entries_of_other_namespaces_or_ips_are_ignored() -> None:
    other_ns = service_entry("""
hosts: [a.example.com]
ports: [{number: 80, name: http, protocol: HTTP}]
workloadSelector: {labels: {app: reviews}}
""", ns="other")
    other_ip = service_entry("""
hosts: [b.example.com]
ports: [{number: 81, name: http, protocol: HTTP}]
resolution: STATIC
endpoints: [{address: 10.0.0.9}]
""")
    r = build(pod(), other_ns, other_ip)
    assert r.port_chain_names() == []
