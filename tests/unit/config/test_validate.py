"""Cross-object warnings, unsupported fields, and the name/address primitives."""

from __future__ import annotations

import pytest

from tests.unit.config.util import istio
from xds_server.config import ConfigObject
from xds_server.config.address import split_host_port
from xds_server.config.parse import parse
from xds_server.config.validate import (
    UNSUPPORTED_FIELDS,
    duplicate_sidecar_warnings,
    unsupported_field_warnings,
    unsupported_fields,
)
from xds_server.config.validate_names import (
    fqdn_error,
    ip_subnet_error,
    is_http,
    is_tcp,
    is_tls,
    protocol_of,
    wildcard_domain_error,
)
from xds_server.config.validate_schema import parse_duration_ns


def sidecar(
    name: str, namespace: str = "ns", created: str = "", selector: dict[str, str] | None = None
) -> ConfigObject:
    d = istio("Sidecar", {"egress": [{"hosts": ["./*"]}]}, name=name, namespace=namespace)
    if created:
        d["metadata"]["creationTimestamp"] = created
    if selector is not None:
        d["spec"]["workloadSelector"] = {"labels": selector}
    obj, problems = parse(d)
    assert obj is not None, problems
    return obj


# ---------------------------------------------------------------- duplicate selector-less Sidecars
def test_second_selectorless_sidecar_in_a_namespace_warns_and_the_oldest_wins() -> None:
    old = sidecar("b-old", created="2024-01-01T00:00:00Z")
    new = sidecar("a-new", created="2024-06-01T00:00:00Z")
    warnings = duplicate_sidecar_warnings([new, old], {new.ref: "f.yaml:1"})
    assert [(str(w), w.warning) for w in warnings] == [
        (
            "f.yaml:1: Sidecar/ns/a-new: spec.workloadSelector: not set, and Sidecar/ns/b-old (older) "
            "already applies to namespace ns; this Sidecar is ignored",
            True,
        )
    ]


def test_same_age_sidecars_are_ordered_by_name() -> None:
    warnings = duplicate_sidecar_warnings([sidecar("b"), sidecar("a")])
    assert [str(w.ref) for w in warnings] == ["Sidecar/ns/b"]


def test_sidecars_with_selectors_or_in_other_namespaces_are_not_duplicates() -> None:
    objs = [sidecar("a"), sidecar("b", selector={"app": "x"}), sidecar("c", namespace="other")]
    assert duplicate_sidecar_warnings(objs) == []


def test_the_same_sidecar_seen_twice_is_not_a_duplicate() -> None:
    assert duplicate_sidecar_warnings([sidecar("a"), sidecar("a")]) == []


# ---------------------------------------------------------------- unsupported fields
def test_unsupported_fields_set_on_an_object_are_listed() -> None:
    spec = {
        "hosts": ["db.example.com"],
        "ports": [{"number": 5432, "name": "tcp-db", "protocol": "TLS"}],
        "resolution": "STATIC",
        "subjectAltNames": ["spiffe://x"],
        "endpoints": [{"address": "10.0.0.1"}, {"address": "10.0.0.2", "network": "net-2"}],
    }
    obj, problems = parse(istio("ServiceEntry", spec))
    assert obj is not None, problems
    assert unsupported_fields(obj) == ["spec.subjectAltNames", "spec.endpoints[].network"]
    warnings = unsupported_field_warnings(obj, "f.yaml:0")
    assert all(w.warning and w.ref == obj.ref for w in warnings)
    assert warnings[0].message.startswith("spec.subjectAltNames: accepted but not acted on by xds-server")


def test_objects_without_unsupported_fields_list_none() -> None:
    assert unsupported_fields(sidecar("a")) == []


def test_every_unsupported_field_path_names_a_real_field() -> None:
    from xds_server._proto import istio_config_pb2 as pb
    from xds_server.config.validate import _is_set

    specs = {"Sidecar": pb.Sidecar, "ServiceEntry": pb.ServiceEntry}
    for kind, fields in UNSUPPORTED_FIELDS.items():
        for path in fields:
            msg = specs[kind]()
            segments = path.removeprefix("spec.").split(".")
            # walking an empty message must find each segment's field (False, not an error)
            assert _is_set(msg, segments) is False
            desc = msg.DESCRIPTOR
            for seg in segments:
                name = seg.removesuffix("[]")
                field = next(f for f in desc.fields if name == f.json_name)
                desc = field.message_type


# ---------------------------------------------------------------- primitives
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", "80")),
        ("[::1]:80", ("::1", "80")),
        (":80", ("", "80")),
        ("::1:80", None),
        ("[::1]80", None),
        ("host", None),
        ("[::1", None),
    ],
)
def test_split_host_port_follows_go(value: str, expected: tuple[str, str] | None) -> None:
    assert split_host_port(value) == expected


def test_protocols_are_istio_names_case_insensitive() -> None:
    assert (
        protocol_of("grpc-web") == "GRPC-Web" and protocol_of("MYSQL") == "MySQL" and protocol_of("x") == ""
    )
    assert is_http("http_proxy") and is_tcp("mongo") and is_tls("https") and not is_http("TCP")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.b.c", True),
        ("istio.io.", True),
        ("a", True),
        ("a.1", False),
        ("a..b", False),
        ("-a.b", False),
        ("", False),
    ],
)
def test_fqdn(name: str, ok: bool) -> None:
    assert (fqdn_error(name) is None) is ok


@pytest.mark.parametrize(
    ("name", "ok"), [("*.a.com", True), ("*", True), ("*-x.a.com", True), ("a.*.com", False)]
)
def test_wildcard_domain(name: str, ok: bool) -> None:
    assert (wildcard_domain_error(name) is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("10.0.0.0/8", True), ("10.0.0.1/8", True), ("10.0.0.0/x", False), ("a/8", False)]
)
def test_ip_subnet(value: str, ok: bool) -> None:
    assert (ip_subnet_error(value) is None) is ok


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1s", 10**9),
        ("1.5s", 1_500_000_000),
        ("1h2m", 3_720 * 10**9),
        ("-30ms", -30 * 10**6),
        ("0", 0),
        ("10us", 10_000),
        ("", None),
        ("1", None),
        ("1x", None),
        ("s", None),
        ("1s2", None),
    ],
)
def test_go_durations(text: str, ns: int | None) -> None:
    assert parse_duration_ns(text) == ns
