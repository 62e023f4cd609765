"""MeshConfig: the --mesh-config file and ConfigMap `istio`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.config.util import messages, parse_yaml
from xds_server.config import MeshConfig, ObjectRef
from xds_server.config.mesh_parse import MESH_FILE_NAME, parse_mesh_config
from xds_server.store.view import MESH_FILE_NAME as VIEW_MESH_FILE_NAME

FIXTURES = Path(__file__).parents[2] / "fixtures" / "manifests"


def test_mesh_file_object_has_the_name_the_store_view_prefers() -> None:
    assert MESH_FILE_NAME == VIEW_MESH_FILE_NAME
    mesh, problems = parse_mesh_config("rootNamespace: istio-config\n")
    assert problems == []
    assert mesh is not None and mesh.meta.name == VIEW_MESH_FILE_NAME


def test_every_supported_field_is_read() -> None:
    text = """
rootNamespace: istio-config
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
connectTimeout: 2.5s
inboundTrafficPolicy: {mode: LOCALHOST}
defaultServiceExportTo: [".", istio-system]
defaultVirtualServiceExportTo: ["."]
defaultDestinationRuleExportTo: ["*"]
protocolDetectionTimeout: 100ms
dnsRefreshRate: 1m
trustDomain: example.org
"""
    mesh, problems = parse_mesh_config(text, "mesh.yaml:0")
    assert problems == []
    assert mesh is not None
    assert (mesh.root_namespace, mesh.outbound_traffic_policy) == ("istio-config", "REGISTRY_ONLY")
    assert mesh.connect_timeout_s == 2.5
    assert mesh.inbound_traffic_policy == "LOCALHOST"
    assert mesh.default_service_export_to == (".", "istio-system")
    assert mesh.default_virtual_service_export_to == (".",)
    assert mesh.default_destination_rule_export_to == ("*",)
    assert mesh.protocol_detection_timeout_s == 0.1
    assert mesh.dns_refresh_rate_s == 60.0
    assert mesh.trust_domain == "example.org"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}"])
def test_empty_mesh_config_means_istio_defaults(text: str) -> None:
    mesh, problems = parse_mesh_config(text)
    assert problems == []
    assert (
        mesh is not None
        and mesh.root_namespace == "istio-system"
        and mesh.outbound_traffic_policy == "ALLOW_ANY"
    )


def test_empty_outbound_policy_is_the_enum_zero_registry_only() -> None:
    mesh, _ = parse_mesh_config("outboundTrafficPolicy: {}")
    assert mesh is not None and mesh.outbound_traffic_policy == "REGISTRY_ONLY"


def test_unknown_istio_fields_are_ignored_with_one_warning() -> None:
    mesh, problems = parse_mesh_config("accessLogFile: /dev/stdout\ndefaultConfig: {concurrency: 2}\n")
    assert mesh is not None
    assert [(p.warning, p.message) for p in problems] == [
        (True, "accessLogFile, defaultConfig: not used by xds-server; ignored")
    ]


def test_kind_meshconfig_document_is_accepted() -> None:
    mesh, problems = parse_mesh_config(
        {"kind": "MeshConfig", "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}
    )
    assert problems == [] and mesh is not None and mesh.outbound_traffic_policy == "REGISTRY_ONLY"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "outboundTrafficPolicy: {mode: DENY}",
            "outboundTrafficPolicy.mode: unknown value 'DENY' (one of REGISTRY_ONLY, ALLOW_ANY)",
        ),
        ("outboundTrafficPolicy: REGISTRY_ONLY", "outboundTrafficPolicy: expected an object, got string"),
        ("connectTimeout: 10", 'connectTimeout: expected a duration such as "10s" or "100ms", got 10'),
        ("connectTimeout: 0s", "connectTimeout: duration must be at least 1ms"),
        ("connectTimeout: 2h", "connectTimeout: duration must be at most 3600s"),
        ("connectTimeout: 1.0005s", "connectTimeout: only durations to ms precision are supported"),
        (
            "rootNamespace: Istio_System",
            "rootNamespace: invalid name 'Istio_System' (must be a lower-case DNS-1123 label)",
        ),
        ("trustDomain: 'bad domain'", "trustDomain: trust domain 'bad domain' is invalid"),
        (
            "defaultServiceExportTo: ['a/b']",
            "defaultServiceExportTo[0]: invalid exportTo value 'a/b' (one of *, ., ~ or a namespace)",
        ),
        ("kind: Sidecar", "kind: expected MeshConfig (or no kind), got 'Sidecar'"),
        ("- a list", "a MeshConfig document must be an object, got list"),
        (
            "a: [",
            "invalid YAML: did not find expected node content (line 2, column 1) "
            "while parsing a flow node (line 2, column 1)",
        ),
    ],
)
def test_bad_mesh_config_is_rejected(text: str, message: str) -> None:
    mesh, problems = parse_mesh_config(text, "mesh.yaml:0")
    assert mesh is None
    assert messages(problems) == [message]
    assert problems[0].ref == ObjectRef("MeshConfig", "", MESH_FILE_NAME)


def test_protocol_detection_timeout_may_be_zero() -> None:
    mesh, problems = parse_mesh_config("protocolDetectionTimeout: 0s")
    assert problems == [] and mesh is not None and mesh.protocol_detection_timeout_s == 0.0


def test_istio_configmap_becomes_a_meshconfig_with_its_metadata() -> None:
    obj, problems = parse_yaml((FIXTURES / "egress-task" / "configmap-istio.yaml").read_text())
    assert problems == []
    assert isinstance(obj, MeshConfig)
    assert (obj.meta.name, obj.meta.namespace) == ("istio", "istio-system")
    assert obj.outbound_traffic_policy == "REGISTRY_ONLY"
    assert str(obj.ref) == "MeshConfig/istio-system/istio"


def test_bad_istio_configmap_names_the_mesh_field() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
    obj, problems = parse_yaml(text + "data:\n  mesh: 'outboundTrafficPolicy: {mode: nope}'\n")
    assert obj is None
    assert [str(p) for p in problems] == [
        "t.yaml:0: MeshConfig/istio-system/istio: data.mesh.outboundTrafficPolicy.mode: "
        "unknown value 'nope' (one of REGISTRY_ONLY, ALLOW_ANY)"
    ]


def test_istio_configmap_without_mesh_key_is_ignored_with_a_warning() -> None:
    obj, problems = parse_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}"
    )
    assert obj is None
    assert [(p.warning, p.message) for p in problems] == [
        (True, "data.mesh: missing; this ConfigMap carries no MeshConfig and is ignored")
    ]


def test_istio_configmap_with_bad_yaml_is_rejected() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata: {mesh: 'a: ['}"
    obj, problems = parse_yaml(text)
    assert obj is None and messages(problems)[0].startswith("data.mesh: invalid YAML: ")
