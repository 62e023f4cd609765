"""Pods, Services and Namespaces: the fields the translator reads, and bad values rejected."""

from __future__ import annotations

import pytest

from tests.unit.config.util import messages, parse_yaml
from xds_server.config import ContainerPort, Pod, Service, ServicePort

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: reviews-1
  namespace: shop
  labels: {app: reviews, version: v1}
spec:
  serviceAccountName: reviews
  nodeName: node-a
  containers:
  - name: app
    ports:
    - {containerPort: 9080, name: http}
    - {containerPort: 5353, protocol: UDP}
  - name: side
status:
  podIP: 10.1.0.7
  podIPs: [{ip: 10.1.0.7}, {ip: "fd00::7"}]
  conditions:
  - {type: PodScheduled, status: "True"}
  - {type: Ready, status: "True"}
"""


def test_pod_fields() -> None:
    pod, problems = parse_yaml(POD)
    assert problems == []
    assert isinstance(pod, Pod)
    assert pod.meta.labels == {"app": "reviews", "version": "v1"}
    assert pod.ips == ("10.1.0.7", "fd00::7")
    assert pod.ip == "10.1.0.7"
    assert pod.ready and not pod.terminating
    assert pod.container_ports == (ContainerPort(9080, "http", "TCP"), ContainerPort(5353, "", "UDP"))
    assert pod.service_account == "reviews"
    assert pod.node_name == "node-a"


def test_pod_ip_comes_first_even_if_pod_ips_order_differs() -> None:
    pod, _ = parse_yaml(POD.replace("podIP: 10.1.0.7", 'podIP: "fd00::7"'))
    assert pod is not None and pod.ips == ("fd00::7", "10.1.0.7")


def test_pod_without_ready_condition_is_not_ready() -> None:
    pod, _ = parse_yaml(POD.replace("type: Ready", "type: Initialized"))
    assert isinstance(pod, Pod) and not pod.ready


def test_pod_with_ready_false_is_not_ready() -> None:
    pod, _ = parse_yaml(POD.replace('{type: Ready, status: "True"}', '{type: Ready, status: "False"}'))
    assert isinstance(pod, Pod) and not pod.ready


def test_terminating_pod_is_not_ready() -> None:
    pod, _ = parse_yaml(
        POD.replace("  namespace: shop\n", "  namespace: shop\n  deletionTimestamp: '2024-01-01T00:00:00Z'\n")
    )
    assert isinstance(pod, Pod) and pod.terminating and not pod.ready


def test_hand_written_pod_without_status_has_no_ip() -> None:
    pod, problems = parse_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}"
    )
    assert problems == []
    assert isinstance(pod, Pod) and pod.ips == () and not pod.ready and pod.service_account == "default"


def test_deprecated_service_account_field_is_read() -> None:
    pod, _ = parse_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {serviceAccount: legacy}")
    assert isinstance(pod, Pod) and pod.service_account == "legacy"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("podIP: 10.1.0.7", "podIP: 10.1.0.999", "status.podIP: '10.1.0.999' is not a valid IP address"),
        (
            "{containerPort: 9080, name: http}",
            "{containerPort: 70000}",
            "spec.containers[0].ports[0].containerPort: port number 70000 must be in the range 1..65535",
        ),
        (
            "{containerPort: 9080, name: http}",
            '{containerPort: "9080"}',
            "spec.containers[0].ports[0].containerPort: expected an integer, got string",
        ),
        (
            "{containerPort: 9080, name: http}",
            "{name: http}",
            "spec.containers[0].ports[0].containerPort: required",
        ),
        (
            "{containerPort: 5353, protocol: UDP}",
            "{containerPort: 5353, protocol: QUIC}",
            "spec.containers[0].ports[1].protocol: unknown value 'QUIC' (one of TCP, UDP, SCTP)",
        ),
        ("version: v1}", "version: 1}", "metadata.labels[version]: expected a string, got integer"),
    ],
)
def test_bad_pod_fields_reject_the_pod(old: str, new: str, message: str) -> None:
    assert old in POD
    pod, problems = parse_yaml(POD.replace(old, new))
    assert pod is None
    assert messages(problems) == [message]
    assert str(problems[0].ref) == "Pod/shop/reviews-1"


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 9080, targetPort: 8080, appProtocol: http}
  - {name: grpc, port: 9090, targetPort: grpc-port}
  - {name: metrics, port: 15020, protocol: UDP}
"""


def test_service_fields() -> None:
    svc, problems = parse_yaml(SERVICE)
    assert problems == []
    assert isinstance(svc, Service)
    assert svc.selector == {"app": "reviews"}
    assert svc.cluster_ip == "10.96.0.10" and not svc.headless
    assert svc.type == "ClusterIP"
    assert svc.ports == (
        ServicePort(9080, "http", "TCP", "http", 8080),
        ServicePort(9090, "grpc", "TCP", "", "grpc-port"),
        ServicePort(15020, "metrics", "UDP", "", None),
    )
    hash(svc)


def test_headless_and_publish_not_ready() -> None:
    text = SERVICE.replace("clusterIP: 10.96.0.10", "clusterIP: None\n  publishNotReadyAddresses: true")
    svc, _ = parse_yaml(text)
    assert isinstance(svc, Service) and svc.headless and svc.publish_not_ready_addresses


def test_selectorless_and_empty_selector_services_have_no_selector() -> None:
    svc, _ = parse_yaml(SERVICE.replace("  selector: {app: reviews}\n", ""))
    assert isinstance(svc, Service) and svc.selector is None
    svc, _ = parse_yaml(SERVICE.replace("{app: reviews}", "{}"))
    assert isinstance(svc, Service) and svc.selector is None


def test_external_name_service() -> None:
    svc, problems = parse_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\n"
        "spec: {type: ExternalName, externalName: example.com}"
    )
    assert problems == []
    assert isinstance(svc, Service) and svc.type == "ExternalName" and svc.external_name == "example.com"


def test_numeric_string_target_port_is_a_number() -> None:
    svc, _ = parse_yaml(SERVICE.replace("targetPort: 8080", 'targetPort: "8080"'))
    assert isinstance(svc, Service) and svc.ports[0].target_port == 8080


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("port: 9080,", "port: 0,", "spec.ports[0].port: port number 0 must be in the range 1..65535"),
        (
            "{name: http, port: 9080,",
            "{port: 9080,",
            "spec.ports[0].name: required when the service has more than one port",
        ),
        ("name: grpc,", "name: http,", "spec.ports[1].name: duplicate port name 'http'"),
        (
            "targetPort: 8080",
            "targetPort: 1.5",
            "spec.ports[0].targetPort: expected an integer or a port name",
        ),
        (
            "targetPort: grpc-port",
            "targetPort: Not_A_Name",
            "spec.ports[1].targetPort: invalid port name 'Not_A_Name' (must be an IANA service name)",
        ),
        (
            "protocol: UDP",
            "protocol: HTTP",
            "spec.ports[2].protocol: unknown value 'HTTP' (one of TCP, UDP, SCTP)",
        ),
        ("clusterIP: 10.96.0.10", "clusterIP: nope", "spec.clusterIP: 'nope' is not a valid IP address"),
        ("selector: {app: reviews}", "selector: [app]", "spec.selector: expected an object, got list"),
    ],
)
def test_bad_service_fields_reject_the_service(old: str, new: str, message: str) -> None:
    assert old in SERVICE
    svc, problems = parse_yaml(SERVICE.replace(old, new))
    assert svc is None
    assert messages(problems) == [message]


def test_namespace_name_must_be_a_label() -> None:
    obj, problems = parse_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}")
    assert obj is None and messages(problems)[0].startswith("metadata.name: invalid name 'a.b'")
