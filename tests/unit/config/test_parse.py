"""parse(): kinds, metadata, the typed spec, and errors as values."""

from __future__ import annotations

import pytest

import xds_server.config.parse as parse_module
from tests.unit.config.util import doc, istio, messages, parse_yaml
from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioServiceEntry, IstioSidecar, Kind, ObjectRef
from xds_server.config.parse import parse
from xds_server.config.refs import FrozenDict

SIDECAR = """
apiVersion: networking.istio.io/{version}
kind: Sidecar
metadata: {{name: default, namespace: prod-us1}}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
"""


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_sidecar_is_accepted_in_every_istio_api_version(version: str) -> None:
    obj, problems = parse_yaml(SIDECAR.format(version=version))
    assert problems == []
    assert isinstance(obj, IstioSidecar)
    assert obj.api_version == f"networking.istio.io/{version}"
    assert obj.ref == ObjectRef(Kind.SIDECAR, "prod-us1", "default")
    assert list(obj.spec.egress[0].hosts) == ["./*", "istio-system/*"]


def test_service_entry_spec_is_the_typed_proto() -> None:
    obj, problems = parse(
        istio(
            "ServiceEntry",
            {
                "hosts": ["httpbin.org"],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "resolution": "DNS",
                "location": "MESH_EXTERNAL",
            },
        )
    )
    assert problems == []
    assert isinstance(obj, IstioServiceEntry)
    assert obj.spec.resolution == pb.ServiceEntry.DNS
    assert obj.spec.ports[0].number == 80


def test_namespace_defaults_to_default() -> None:
    obj, _ = parse_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}")
    assert obj is not None and obj.meta.namespace == "default"
    assert obj.ref == ObjectRef(Kind.SERVICE, "default", "s")


def test_labels_and_annotations_become_frozen_dicts() -> None:
    obj, _ = parse_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {a: b}, annotations: {c: d}}"
    )
    assert obj is not None
    assert isinstance(obj.meta.labels, FrozenDict) and obj.meta.labels == {"a": "b"}
    assert isinstance(obj.meta.annotations, FrozenDict) and obj.meta.annotations == {"c": "d"}
    hash(obj)


def test_namespace_objects_are_cluster_scoped() -> None:
    obj, _ = parse_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, namespace: ignored}")
    assert obj is not None and obj.ref == ObjectRef(Kind.NAMESPACE, "", "n")


def test_unquoted_creation_timestamp_is_kept_as_rfc3339() -> None:
    obj, problems = parse_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, creationTimestamp: 2024-05-01T10:00:00Z}"
    )
    assert problems == []
    assert obj is not None and obj.meta.creation_timestamp == "2024-05-01T10:00:00Z"


def test_resource_version_and_uid_are_kept() -> None:
    obj, _ = parse_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, resourceVersion: 42, uid: u-1}")
    assert obj is not None and obj.meta.resource_version == "42" and obj.meta.uid == "u-1"


# ---------------------------------------------------------------- errors name the field
def test_unknown_field_is_named_by_its_path() -> None:
    obj, problems = parse(istio("Sidecar", {"egress": [{"port": {"numbr": 9080}, "hosts": ["./*"]}]}))
    assert obj is None
    assert messages(problems) == ["spec.egress[0].port.numbr: unknown field"]
    assert problems[0].ref == ObjectRef(Kind.SIDECAR, "ns", "x")


def test_problem_prints_where_ref_field_and_message() -> None:
    _, problems = parse(istio("Sidecar", {"egress": [{"port": {"numbr": 1}, "hosts": ["./*"]}]}), "a.yaml:3")
    assert [str(p) for p in problems] == ["a.yaml:3: Sidecar/ns/x: spec.egress[0].port.numbr: unknown field"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"egress": [{"port": {"number": "abc"}, "hosts": ["./*"]}]},
            "spec.egress[0].port.number: expected an integer, got string",
        ),
        (
            {"egress": [{"port": {"number": True}, "hosts": ["./*"]}]},
            "spec.egress[0].port.number: expected an integer, got boolean",
        ),
        (
            {"egress": [{"port": {"number": -1}, "hosts": ["./*"]}]},
            "spec.egress[0].port.number: -1 is out of range 0..4294967295",
        ),
        (
            {"egress": [{"captureMode": "FOO", "hosts": ["./*"]}]},
            "spec.egress[0].captureMode: unknown value 'FOO' (one of DEFAULT, IPTABLES, NONE)",
        ),
        ({"egress": {"hosts": ["./*"]}}, "spec.egress: expected a list, got object"),
        ({"egress": [{"hosts": "./*"}]}, "spec.egress[0].hosts: expected a list, got string"),
        ({"egress": [{"hosts": ["./*", None]}]}, "spec.egress[0].hosts[1]: null is not allowed in a list"),
        ({"egress": [None]}, "spec.egress[0]: null is not allowed in a list"),
        (
            {"workloadSelector": {"labels": {"app": 1}}, "egress": [{"hosts": ["./*"]}]},
            "spec.workloadSelector.labels[app]: expected a string, got integer",
        ),
        (
            {"inboundConnectionPool": {"tcp": {"connectTimeout": "soon"}}},
            "spec.inboundConnectionPool.tcp.connectTimeout: invalid duration 'soon' "
            '(expected e.g. "1s", "30ms", "1m30s")',
        ),
        ("not an object", "spec: expected an object, got string"),
    ],
)
def test_wrong_types_are_named_by_their_path(spec: object, message: str) -> None:
    obj, problems = parse(istio("Sidecar", spec))
    assert obj is None
    assert messages(problems) == [message]


def test_every_bad_field_is_reported_not_only_the_first() -> None:
    spec = {"egress": [{"port": {"numbr": 1, "protocl": "HTTP"}, "hosts": ["./*"]}], "ingres": []}
    _, problems = parse(istio("Sidecar", spec))
    assert sorted(messages(problems)) == [
        "spec.egress[0].port.numbr: unknown field",
        "spec.egress[0].port.protocl: unknown field",
        "spec.ingres: unknown field",
    ]


def test_null_means_unset() -> None:
    obj, problems = parse(istio("Sidecar", {"egress": [{"port": None, "bind": None, "hosts": ["./*"]}]}))
    assert problems == []
    assert obj is not None and not obj.spec.egress[0].HasField("port")


def test_proto_field_names_are_accepted_like_protojson() -> None:
    obj, problems = parse(
        istio("Sidecar", {"workload_selector": {"labels": {"a": "b"}}, "egress": [{"hosts": ["./*"]}]})
    )
    assert problems == []
    assert obj is not None and dict(obj.spec.workload_selector.labels) == {"a": "b"}


def test_durations_take_go_syntax() -> None:
    spec = {"inboundConnectionPool": {"tcp": {"connectTimeout": "1m30.5s", "idleTimeout": "250ms"}}}
    obj, problems = parse(istio("Sidecar", spec))
    assert problems == []
    assert obj is not None
    tcp = obj.spec.inbound_connection_pool.tcp
    assert (tcp.connect_timeout.seconds, tcp.connect_timeout.nanos) == (90, 500_000_000)
    assert tcp.idle_timeout.ToMilliseconds() == 250


def test_empty_object_field_counts_as_present() -> None:
    obj, problems = parse(istio("Sidecar", {"outboundTrafficPolicy": {}}))
    assert problems == []
    assert obj is not None and obj.spec.HasField("outbound_traffic_policy")


# ---------------------------------------------------------------- documents and kinds
def test_missing_name_is_rejected_and_says_so() -> None:
    d = istio("Sidecar", {"egress": [{"hosts": ["./*"]}]})
    del d["metadata"]["name"]
    obj, problems = parse(d, "f.yaml:0")
    assert obj is None
    assert [str(p) for p in problems] == ["f.yaml:0: metadata.name: required"]


def test_invalid_name_is_rejected_and_names_the_object() -> None:
    obj, problems = parse(istio("Sidecar", {"egress": [{"hosts": ["./*"]}]}, name="Bad_Name"))
    assert obj is None
    assert problems[0].ref == ObjectRef(Kind.SIDECAR, "ns", "Bad_Name")
    assert problems[0].message.startswith("metadata.name: invalid name 'Bad_Name'")


def test_invalid_namespace_is_rejected() -> None:
    obj, problems = parse(istio("Sidecar", {"egress": [{"hosts": ["./*"]}]}, namespace="Not.A.Label"))
    assert obj is None
    assert messages(problems)[0].startswith("metadata.namespace: invalid name")


def test_metadata_must_be_an_object() -> None:
    obj, problems = parse({"apiVersion": "v1", "kind": "Service", "metadata": ["x"]})
    assert obj is None and messages(problems) == ["metadata: expected an object, got list"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (["a", "list"], "document: expected an object, got list"),
        (
            {"apiVersion": "v1", "metadata": {"name": "x"}},
            "kind: required (every manifest needs apiVersion and kind)",
        ),
        ({"apiVersion": "v1", "kind": 5}, "kind: expected a string, got integer"),
        ({"apiVersion": 1, "kind": "Pod"}, "apiVersion: expected a string, got integer"),
    ],
)
def test_malformed_documents_are_rejected(document: object, message: str) -> None:
    obj, problems = parse(document)  # type: ignore[arg-type]
    assert obj is None and messages(problems) == [message]


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-istio}\ndata: {mesh: 'x: 1'}",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}",
    ],
)
def test_kinds_xds_server_does_not_read_are_skipped_silently(text: str) -> None:
    assert parse_yaml(text) == (None, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: v, namespace: n}",
            "kind: networking.istio.io/v1 Gateway is not supported by xds-server; ignored",
        ),
        (
            "apiVersion: networking.istio.io/v2\nkind: Sidecar\nmetadata: {name: v, namespace: n}",
            "kind: networking.istio.io/v2 Sidecar is not supported by xds-server; ignored",
        ),
    ],
)
def test_other_istio_networking_kinds_get_a_warning(text: str, message: str) -> None:
    obj, problems = parse_yaml(text)
    assert obj is None
    assert [(p.warning, p.message) for p in problems] == [(True, message)]
    assert problems[0].ref is not None and problems[0].ref.namespace == "n"


def test_a_meshconfig_document_among_manifests_is_ignored_with_a_warning() -> None:
    obj, problems = parse_yaml("kind: MeshConfig\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}")
    assert obj is None and problems[0].warning


def test_parse_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(parse_module, "validate", boom)
    obj, problems = parse(istio("Sidecar", {"egress": [{"hosts": ["./*"]}]}))
    assert obj is None
    assert problems[0].ref == ObjectRef("Sidecar", "ns", "x")
    assert problems[0].message.startswith("document: could not be parsed (RuntimeError('bug'))")


def test_doc_helper_reads_yaml() -> None:
    assert doc("a: 1") == {"a": 1}
