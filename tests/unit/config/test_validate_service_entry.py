"""Istio's ServiceEntry rules, one behaviour per test (istio ValidateServiceEntry)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.config.util import errors_of, warnings_of

HTTP = [{"number": 80, "name": "http", "protocol": "HTTP"}]


def se(**spec: Any) -> dict[str, Any]:
    return {"hosts": ["api.example.com"], "ports": HTTP, "resolution": "DNS", **spec}


def se_errors(**spec: Any) -> list[str]:
    return errors_of("ServiceEntry", se(**spec))


def se_warnings(**spec: Any) -> list[str]:
    return warnings_of("ServiceEntry", se(**spec))


def test_a_plain_dns_entry_is_valid() -> None:
    assert se_errors() == [] and se_warnings() == []


# ---------------------------------------------------------------- hosts
def test_hosts_are_required() -> None:
    assert se_errors(hosts=[]) == ["spec.hosts: a service entry must have at least one host"]


def test_full_wildcard_host_is_rejected() -> None:
    assert se_errors(hosts=["*"], resolution="NONE") == [
        "spec.hosts[0]: invalid host * (a full wildcard is not allowed)"
    ]


def test_wildcard_only_in_the_left_most_label() -> None:
    assert se_errors(hosts=["*.example.com"], resolution="NONE") == []
    assert se_errors(hosts=["a.*.example.com"], resolution="NONE") == [
        "spec.hosts[0]: domain name 'a.*.example.com' invalid (label '*' invalid)"
    ]


def test_partial_wildcard_host_warns() -> None:
    assert se_errors(hosts=["*-api.example.com"], resolution="NONE") == []
    assert se_warnings(hosts=["*-api.example.com"], resolution="NONE") == [
        "spec.hosts[0]: partial wildcard '*-api.example.com' not allowed"
    ]


def test_short_host_names_are_allowed() -> None:
    assert se_errors(hosts=["reviews"]) == []


# ---------------------------------------------------------------- addresses
@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.0.0/24", "2001:db8::1", "2001:db8::/32"])
def test_addresses_are_ips_or_cidrs(address: str) -> None:
    assert se_errors(addresses=[address], resolution="STATIC") == []


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.0.0.300", "spec.addresses[0]: '10.0.0.300' is not a valid IP address"),
        ("10.0.0.0/33", "spec.addresses[0]: '10.0.0.0/33' is not a valid CIDR block"),
        ("example.com", "spec.addresses[0]: 'example.com' is not a valid IP address"),
    ],
)
def test_bad_addresses_are_rejected(address: str, message: str) -> None:
    assert se_errors(addresses=[address], resolution="STATIC") == [message]


def test_cidr_addresses_only_with_none_or_static_resolution() -> None:
    assert se_errors(addresses=["10.0.0.0/24"]) == [
        "spec.addresses: CIDR addresses are allowed only with resolution NONE or STATIC"
    ]


# ---------------------------------------------------------------- ports
def test_ports_are_required() -> None:
    assert se_errors(ports=[]) == ["spec.ports: a service entry must have at least one port"]


def test_port_numbers_and_names_must_be_unique() -> None:
    ports = [
        {"number": 80, "name": "http", "protocol": "HTTP"},
        {"number": 80, "name": "http", "protocol": "HTTP"},
    ]
    assert se_errors(ports=ports) == [
        "spec.ports[1].name: port name 'http' already defined",
        "spec.ports[1].number: port 80 already defined",
    ]


def test_port_name_is_required() -> None:
    assert se_errors(ports=[{"number": 80, "protocol": "HTTP"}]) == [
        "spec.ports[0].name: port name is required"
    ]


def test_port_number_and_protocol_are_checked() -> None:
    errors = se_errors(ports=[{"number": 0, "name": "x", "protocol": "SMTP"}])
    assert errors[0].startswith("spec.ports[0].protocol: unsupported protocol 'SMTP'")
    assert errors[1] == "spec.ports[0].number: port number 0 must be in the range 1..65535"


def test_target_port_range_and_no_effect_with_none() -> None:
    assert se_errors(ports=[{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 70000}]) == [
        "spec.ports[0].targetPort: port number 70000 must be in the range 1..65535"
    ]
    ports = [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080}]
    assert se_warnings(ports=ports, resolution="NONE") == [
        "spec.ports[0].targetPort: has no effect with resolution NONE"
    ]


def test_tcp_port_without_addresses_warns() -> None:
    warnings = se_warnings(ports=[{"number": 3306, "name": "db", "protocol": "TCP"}])
    assert len(warnings) == 1 and warnings[0].startswith(
        "spec.addresses: required for TCP (or unset protocol) port 3306"
    )
    assert (
        se_warnings(ports=[{"number": 3306, "name": "db", "protocol": "TCP"}], addresses=["10.0.0.1"]) == []
    )


# ---------------------------------------------------------------- resolution and endpoints
def test_resolution_none_takes_no_endpoints() -> None:
    assert se_errors(resolution="NONE", endpoints=[{"address": "10.0.0.1"}]) == [
        "spec.endpoints: no endpoints may be given with resolution NONE"
    ]


def test_static_endpoints_must_be_ips_or_unix_sockets() -> None:
    assert se_errors(resolution="STATIC", endpoints=[{"address": "10.0.0.1"}, {"address": "fd00::1"}]) == []
    assert se_errors(resolution="STATIC", endpoints=[{"address": "db.example.com"}]) == [
        "spec.endpoints[0].address: 'db.example.com' is not an IP address (required with resolution STATIC)"
    ]


def test_static_endpoint_address_is_required() -> None:
    assert se_errors(resolution="STATIC", endpoints=[{"ports": {"http": 8080}}]) == [
        "spec.endpoints[0].address: required"
    ]


def test_unix_endpoint_needs_exactly_one_port_and_no_endpoint_ports() -> None:
    assert se_errors(resolution="STATIC", endpoints=[{"address": "unix:///var/run/a.sock"}]) == []
    two = [*HTTP, {"number": 81, "name": "http2", "protocol": "HTTP"}]
    assert se_errors(
        resolution="STATIC", ports=two, endpoints=[{"address": "unix:///a.sock", "ports": {"http": 1}}]
    ) == [
        "spec.endpoints[0].ports: unix endpoint 'unix:///a.sock' must not have ports",
        "spec.endpoints[0].address: exactly one service port is required for unix endpoints",
    ]


def test_endpoint_ports_must_name_service_ports() -> None:
    assert se_errors(resolution="STATIC", endpoints=[{"address": "10.0.0.1", "ports": {"grpc": 9090}}]) == [
        "spec.endpoints[0].ports[grpc]: port 'grpc' is not defined by the service entry"
    ]


def test_dns_without_endpoints_needs_fqdn_hosts() -> None:
    assert se_errors(hosts=["*.example.com"]) == [
        "spec.hosts[0]: must be an FQDN (no wildcard) with resolution DNS and no endpoints"
    ]
    assert se_errors(hosts=["*.example.com"], endpoints=[{"address": "proxy.example.com"}]) == []


def test_dns_endpoints_are_ips_or_fqdns() -> None:
    assert se_errors(endpoints=[{"address": "10.0.0.1"}, {"address": "a.example.com"}]) == []
    assert se_errors(endpoints=[{"address": "not a host"}]) == [
        "spec.endpoints[0].address: 'not a host' is not a valid FQDN or IP address"
    ]


def test_dns_round_robin_allows_at_most_one_endpoint() -> None:
    eps = [{"address": "a.example.com"}, {"address": "b.example.com"}]
    assert se_errors(resolution="DNS_ROUND_ROBIN", endpoints=eps[:1]) == []
    assert se_errors(resolution="DNS_ROUND_ROBIN", endpoints=eps) == [
        "spec.endpoints: at most one endpoint is allowed with resolution DNS_ROUND_ROBIN"
    ]


def test_dynamic_dns_is_not_supported() -> None:
    assert se_errors(resolution="DYNAMIC_DNS") == [
        "spec.resolution: DYNAMIC_DNS is not supported by xds-server"
    ]


def test_endpoints_and_workload_selector_are_mutually_exclusive() -> None:
    errors = se_errors(
        resolution="STATIC", workloadSelector={"labels": {"app": "a"}}, endpoints=[{"address": "10.0.0.1"}]
    )
    assert errors == ["spec.workloadSelector: only one of workloadSelector or endpoints is allowed"]


def test_workload_selector_is_pointless_with_dns() -> None:
    assert se_warnings(workloadSelector={"labels": {"app": "a"}}) == [
        "spec.workloadSelector: has no effect with resolution DNS"
    ]


def test_multiple_hosts_need_http_or_tls_ports_unless_resolution_none() -> None:
    tcp = [{"number": 9000, "name": "tcp", "protocol": "TCP"}]
    hosts = ["a.example.com", "b.example.com"]
    assert se_errors(hosts=hosts, ports=tcp, addresses=["10.0.0.1"], resolution="STATIC") == [
        "spec.ports[0].protocol: multiple hosts need HTTP or TLS ports (got TCP) unless resolution is NONE"
    ]
    assert se_errors(hosts=hosts, ports=tcp, addresses=["10.0.0.1"], resolution="NONE") == []
    assert se_errors(hosts=hosts) == []


# ---------------------------------------------------------------- exportTo
@pytest.mark.parametrize("export_to", [["*"], ["."], ["~"], ["ns", "other"], [".", "other"]])
def test_valid_export_to(export_to: list[str]) -> None:
    assert se_errors(exportTo=export_to) == []


@pytest.mark.parametrize(
    ("export_to", "messages"),
    [
        (["*", "ns"], ["spec.exportTo: cannot have both public (*) and non-public exportTo values"]),
        (["~", "ns"], ["spec.exportTo: cannot export to no one (~) and someone"]),
        (["a", "a"], ["spec.exportTo[1]: duplicate exportTo entry 'a'"]),
        ([".", "ns"], ["spec.exportTo[1]: duplicate exportTo entry 'ns' (. is the namespace ns)"]),
        (["bad/ns"], ["spec.exportTo[0]: invalid exportTo value 'bad/ns' (one of *, ., ~ or a namespace)"]),
    ],
)
def test_invalid_export_to(export_to: list[str], messages: list[str]) -> None:
    assert se_errors(exportTo=export_to) == messages
