"""Istio's Sidecar rules, one behaviour per test (istio ValidateSidecar)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.config.util import errors_of, warnings_of

HOSTS = {"hosts": ["./*"]}


def egress(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {"egress": list(listeners)}


def ingress(*listeners: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"ingress": list(listeners), **extra}


def port(number: int, protocol: str = "HTTP", **extra: Any) -> dict[str, Any]:
    return {"number": number, "protocol": protocol, **extra}


def sidecar_errors(spec: dict[str, Any]) -> list[str]:
    return errors_of("Sidecar", spec)


# ---------------------------------------------------------------- egress hosts
@pytest.mark.parametrize(
    "host",
    [
        "*/*",
        "./*",
        "~/*",
        "prod-us1/*",
        "istio-system/*",
        "*/mysql.foo.com",
        "./foo.example.com",
        "prod/*.example.com",
        "~ns/excluded.example.com",
        "Ns-1/a.b",
    ],
)
def test_valid_egress_host_forms(host: str) -> None:
    assert sidecar_errors(egress({"hosts": [host]})) == []


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            "mysql.foo.com",
            "spec.egress[0].hosts[0]: host 'mysql.foo.com' must be of the form namespace/dnsName",
        ),
        ("a/b/c.com", "spec.egress[0].hosts[0]: host 'a/b/c.com' must be of the form namespace/dnsName"),
        ("/foo.com", "spec.egress[0].hosts[0]: host '/foo.com': namespace and dnsName cannot be empty"),
        ("ns/", "spec.egress[0].hosts[0]: host 'ns/': namespace and dnsName cannot be empty"),
        ("bad_ns/foo.com", "spec.egress[0].hosts[0]: invalid namespace 'bad_ns' in host 'bad_ns/foo.com'"),
        ("ns/foo", "spec.egress[0].hosts[0]: short name 'foo' is not allowed; use an FQDN or a wildcard"),
        ("ns/foo.*.com", "spec.egress[0].hosts[0]: domain name 'foo.*.com' invalid (label '*' invalid)"),
        ("ns/*foo*.com", "spec.egress[0].hosts[0]: domain name '*foo*.com' invalid (label '*foo*' invalid)"),
        (
            "ns/foo.123",
            "spec.egress[0].hosts[0]: domain name 'foo.123' invalid "
            "(top level domain '123' cannot be all-numeric)",
        ),
    ],
)
def test_invalid_egress_hosts_are_rejected(host: str, message: str) -> None:
    assert sidecar_errors(egress({"hosts": [host]})) == [message]


def test_egress_listener_needs_a_host() -> None:
    assert sidecar_errors(egress({"port": port(80)})) == [
        "spec.egress[0].hosts: egress listener must contain at least one host"
    ]


def test_duplicated_egress_hosts_are_a_warning() -> None:
    spec = egress({"hosts": ["ns/a.com", "ns/a.com", "ns/*"]})
    assert sidecar_errors(spec) == []
    assert warnings_of("Sidecar", spec) == [
        "spec.egress[0].hosts[1]: duplicated egress host 'ns/a.com'",
        "spec.egress[0].hosts[2]: duplicated egress host 'ns/*'",
    ]


def test_all_hosts_together_with_others_is_a_warning() -> None:
    assert warnings_of("Sidecar", egress({"hosts": ["*/*", "ns/a.com"]})) == [
        "spec.egress[0].hosts: `*/*` selects every service; other hosts add nothing"
    ]


# ---------------------------------------------------------------- egress ports, binds, capture
def test_only_one_portless_egress_listener_and_it_must_be_last() -> None:
    assert sidecar_errors(egress(HOSTS, {"port": port(80), **HOSTS})) == [
        "spec.egress[0].port: the egress listener with empty port must be the last one"
    ]
    assert sidecar_errors(egress({"port": port(80), **HOSTS}, HOSTS, HOSTS)) == [
        "spec.egress[1].port: the egress listener with empty port must be the last one",
    ]


def test_two_portless_listeners_at_the_end_are_rejected() -> None:
    errors = sidecar_errors(egress(HOSTS, HOSTS))
    assert errors == ["spec.egress[0].port: the egress listener with empty port must be the last one"]


def test_egress_bind_requires_a_port() -> None:
    assert sidecar_errors(egress({"bind": "127.0.0.1", **HOSTS})) == ["spec.egress[0].bind: requires a port"]


def test_egress_ports_must_be_unique() -> None:
    assert sidecar_errors(egress({"port": port(80), **HOSTS}, {"port": port(80, "TCP"), **HOSTS})) == [
        "spec.egress[1].port.number: ports on IP bound listeners must be unique (80)"
    ]


def test_egress_bind_must_be_an_ip() -> None:
    assert sidecar_errors(egress({"port": port(80), "bind": "localhost", **HOSTS})) == [
        "spec.egress[0].bind: 'localhost' is not a valid IP address"
    ]


@pytest.mark.parametrize("bind", ["127.0.0.1", "10.1.1.1", "::1", "0.0.0.0", "fd00::1"])
def test_egress_bind_may_be_ipv4_or_ipv6(bind: str) -> None:
    assert sidecar_errors(egress({"port": port(80), "bind": bind, **HOSTS})) == []


def test_port_zero_requires_a_unix_socket_bind() -> None:
    assert sidecar_errors(egress({"port": port(0), **HOSTS})) == [
        "spec.egress[0].bind: a listener with port 0 must bind a unix domain socket (unix://...)"
    ]
    assert sidecar_errors(egress({"port": port(0), "bind": "unix:///var/run/app.sock", **HOSTS})) == []
    assert sidecar_errors(egress({"port": port(0), "bind": "unix://@abstract", **HOSTS})) == []


def test_unix_socket_path_must_be_absolute() -> None:
    assert sidecar_errors(egress({"port": port(0), "bind": "unix://relative.sock", **HOSTS})) == [
        "spec.egress[0].bind: 'relative.sock' is not an absolute path to a file"
    ]


def test_unix_socket_bind_requires_port_zero() -> None:
    assert sidecar_errors(egress({"port": port(80), "bind": "unix:///a.sock", **HOSTS})) == [
        "spec.egress[0].bind: a unix domain socket bind requires port number 0"
    ]


def test_unix_socket_listener_capture_mode_must_be_default_or_none() -> None:
    base = {"port": port(0), "bind": "unix:///a.sock", **HOSTS}
    assert sidecar_errors(egress({**base, "captureMode": "NONE"})) == []
    assert sidecar_errors(egress({**base, "captureMode": "IPTABLES"})) == [
        "spec.egress[0].captureMode: must be DEFAULT or NONE for unix domain socket listeners"
    ]


def test_unix_socket_binds_must_be_unique() -> None:
    listener = {"port": port(0), "bind": "unix:///a.sock", **HOSTS}
    assert sidecar_errors(egress(listener, listener)) == [
        "spec.egress[1].bind: unix domain socket 'unix:///a.sock' is used twice"
    ]


def test_egress_port_number_range() -> None:
    assert sidecar_errors(egress({"port": port(70000), **HOSTS})) == [
        "spec.egress[0].port.number: port number 70000 must be in the range 1..65535"
    ]


def test_target_port_is_rejected_on_sidecars() -> None:
    assert sidecar_errors(egress({"port": port(80, targetPort=8080), **HOSTS})) == [
        "spec.egress[0].port.targetPort: has no impact on Sidecars; remove it"
    ]


@pytest.mark.parametrize(
    "protocol",
    [
        "HTTP",
        "https",
        "GRPC",
        "GRPC-Web",
        "http2",
        "MONGO",
        "MySQL",
        "redis",
        "TCP",
        "TLS",
        "UDP",
        "HTTP_PROXY",
        "",
    ],
)
def test_istio_protocol_names_are_case_insensitive(protocol: str) -> None:
    assert sidecar_errors(egress({"port": port(80, protocol), **HOSTS})) == []


def test_unknown_protocol_is_rejected() -> None:
    errors = sidecar_errors(egress({"port": port(80, "QUIC"), **HOSTS}))
    assert len(errors) == 1 and errors[0].startswith(
        "spec.egress[0].port.protocol: unsupported protocol 'QUIC'"
    )


def test_port_name_must_be_a_dns_label() -> None:
    assert sidecar_errors(egress({"port": port(80, name="bad_name"), **HOSTS})) == [
        "spec.egress[0].port.name: invalid port name 'bad_name' (must be a DNS-1123 label)"
    ]


# ---------------------------------------------------------------- ingress
def test_ingress_port_is_required() -> None:
    assert sidecar_errors(ingress({"defaultEndpoint": "127.0.0.1:8080"})) == [
        "spec.ingress[0].port: required for ingress listeners"
    ]


def test_ingress_port_number_must_be_1_to_65535() -> None:
    assert sidecar_errors(ingress({"port": port(0)})) == [
        "spec.ingress[0].port.number: port number 0 must be in the range 1..65535"
    ]


def test_ingress_ports_must_be_unique() -> None:
    assert sidecar_errors(ingress({"port": port(80)}, {"port": port(80)})) == [
        "spec.ingress[1].port.number: ports on IP bound listeners must be unique (80)"
    ]


def test_ingress_target_port_is_rejected() -> None:
    assert sidecar_errors(ingress({"port": port(80, targetPort=81)})) == [
        "spec.ingress[0].port.targetPort: has no impact on Sidecars; remove it"
    ]


def test_ingress_bind_cannot_be_a_unix_socket() -> None:
    assert sidecar_errors(ingress({"port": port(80), "bind": "unix:///a.sock"})) == [
        "spec.ingress[0].bind: unix domain sockets are not allowed for ingress listeners"
    ]


def test_ingress_bind_must_be_an_ip() -> None:
    assert sidecar_errors(ingress({"port": port(80), "bind": "172.16.1.32"})) == []
    assert sidecar_errors(ingress({"port": port(80), "bind": "host.example"})) == [
        "spec.ingress[0].bind: 'host.example' is not a valid IP address"
    ]


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080", "[::]:8080", ":8080", "unix:///var/run/app.sock"],
)
def test_default_endpoint_forms(endpoint: str) -> None:
    assert sidecar_errors(ingress({"port": port(80), "defaultEndpoint": endpoint})) == []


@pytest.mark.parametrize(
    ("endpoint", "messages"),
    [
        (
            "10.0.0.1:8080",
            [
                "'10.0.0.1:8080' must be of the form " + "127.0.0.1:PORT, [::1]:PORT, 0.0.0.0:PORT, "
                "[::]:PORT or unix:///path"
            ],
        ),
        (
            "127.0.0.1",
            [
                "'127.0.0.1' must be of the form 127.0.0.1:PORT, [::1]:PORT, 0.0.0.0:PORT, [::]:PORT "
                "or unix:///path"
            ],
        ),
        ("127.0.0.1:http", ["port 'http' is not a number"]),
        ("127.0.0.1:0", ["port number 0 must be in the range 1..65535"]),
        ("unix://app.sock", ["'app.sock' is not an absolute path to a file"]),
    ],
)
def test_invalid_default_endpoints(endpoint: str, messages: list[str]) -> None:
    assert sidecar_errors(ingress({"port": port(80), "defaultEndpoint": endpoint})) == [
        f"spec.ingress[0].defaultEndpoint: {m}" for m in messages
    ]


# ---------------------------------------------------------------- ingress tls
TLS_SIMPLE = {"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}


def tls_errors(tls: dict[str, Any], protocol: str = "HTTPS") -> list[str]:
    return sidecar_errors(ingress({"port": port(8443, protocol), "tls": tls}))


def test_simple_tls_on_an_https_port_is_valid() -> None:
    assert tls_errors(TLS_SIMPLE) == []
    assert tls_errors(TLS_SIMPLE, "TLS") == []


def test_simple_tls_needs_certificate_and_key() -> None:
    assert tls_errors({"mode": "SIMPLE"}) == [
        "spec.ingress[0].tls.serverCertificate: required with SIMPLE TLS",
        "spec.ingress[0].tls.privateKey: required with SIMPLE TLS",
    ]


def test_mutual_tls_also_needs_a_ca_bundle() -> None:
    assert tls_errors({**TLS_SIMPLE, "mode": "MUTUAL"}) == [
        "spec.ingress[0].tls.caCertificates: required with MUTUAL TLS (the client CA bundle)"
    ]
    assert tls_errors({**TLS_SIMPLE, "mode": "MUTUAL", "caCertificates": "/ca.pem"}) == []


def test_tls_requires_an_https_or_tls_port() -> None:
    assert tls_errors(TLS_SIMPLE, "HTTP") == [
        "spec.ingress[0].port.protocol: must be HTTPS or TLS when tls is set (got HTTP)"
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"mode": "ISTIO_MUTUAL"}, "spec.ingress[0].tls.mode: cannot be ISTIO_MUTUAL in sidecar ingress tls"),
        (
            {"mode": "AUTO_PASSTHROUGH"},
            "spec.ingress[0].tls.mode: cannot be AUTO_PASSTHROUGH in sidecar ingress tls",
        ),
        (
            {"credentialName": "secret"},
            "spec.ingress[0].tls.credentialName: not supported in sidecar ingress tls",
        ),
        ({"httpsRedirect": True}, "spec.ingress[0].tls.httpsRedirect: not supported in sidecar ingress tls"),
        (
            {"subjectAltNames": ["a"]},
            "spec.ingress[0].tls.subjectAltNames: not supported in sidecar ingress tls",
        ),
    ],
)
def test_tls_settings_sidecars_cannot_use(extra: dict[str, Any], message: str) -> None:
    assert message in tls_errors({**TLS_SIMPLE, **extra})


def test_istio_mutual_rejects_certificates() -> None:
    errors = tls_errors({**TLS_SIMPLE, "mode": "ISTIO_MUTUAL"})
    assert "spec.ingress[0].tls.serverCertificate: must not be set with ISTIO_MUTUAL" in errors


def test_old_tls_versions_without_ciphers_warn() -> None:
    spec = ingress({"port": port(8443, "HTTPS"), "tls": {**TLS_SIMPLE, "minProtocolVersion": "TLSV1_0"}})
    assert warnings_of("Sidecar", spec) == [
        "spec.ingress[0].tls.minProtocolVersion: TLS versions below TLSV1_2 need compatible cipherSuites"
    ]


# ---------------------------------------------------------------- connection pools
def test_connection_pool_needs_tcp_or_http() -> None:
    assert sidecar_errors({"inboundConnectionPool": {}}) == [
        "spec.inboundConnectionPool: connection pool must have at least one of tcp, http"
    ]


def test_connection_pool_values_must_be_non_negative() -> None:
    spec = {"inboundConnectionPool": {"http": {"maxRetries": -1}, "tcp": {"maxConnections": -2}}}
    assert sidecar_errors(spec) == [
        "spec.inboundConnectionPool.http.maxRetries: must be non-negative",
        "spec.inboundConnectionPool.tcp.maxConnections: must be non-negative",
    ]


def test_connection_pool_durations_need_1ms_and_ms_precision() -> None:
    spec = {"inboundConnectionPool": {"tcp": {"connectTimeout": "0s", "idleTimeout": "1500us"}}}
    assert sidecar_errors(spec) == [
        "spec.inboundConnectionPool.tcp.connectTimeout: duration must be at least 1ms",
        "spec.inboundConnectionPool.tcp.idleTimeout: only durations to ms precision are supported",
    ]


def test_use_client_protocol_conflicts_with_h2_upgrade() -> None:
    spec = {"inboundConnectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "useClientProtocol": True}}}
    assert sidecar_errors(spec) == [
        "spec.inboundConnectionPool.http.useClientProtocol: must not be true when h2UpgradePolicy is UPGRADE"
    ]


def test_http_pool_settings_on_a_tcp_ingress_port_warn() -> None:
    spec = ingress({"port": port(3306, "TCP"), "connectionPool": {"http": {"maxRetries": 1}}})
    assert sidecar_errors(spec) == []
    assert warnings_of("Sidecar", spec) == [
        "spec.ingress[0].connectionPool.http: HTTP settings are configured for port 3306 but its protocol "
        "is not HTTP (TCP); only TCP settings apply"
    ]


# ---------------------------------------------------------------- outbound traffic policy
def test_egress_proxy_only_with_allow_any() -> None:
    policy = {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "proxy.example.com", "port": {"number": 3128}}}
    assert sidecar_errors({"outboundTrafficPolicy": policy}) == [
        "spec.outboundTrafficPolicy.egressProxy: may be set only with mode ALLOW_ANY"
    ]
    assert sidecar_errors({"outboundTrafficPolicy": {**policy, "mode": "ALLOW_ANY"}}) == []


def test_egress_proxy_needs_an_fqdn_host_and_a_port() -> None:
    policy = {"mode": "ALLOW_ANY", "egressProxy": {"host": "*.example.com"}}
    assert sidecar_errors({"outboundTrafficPolicy": policy}) == [
        "spec.outboundTrafficPolicy.egressProxy.host: "
        "domain name '*.example.com' invalid (label '*' invalid)",
        "spec.outboundTrafficPolicy.egressProxy.port: required",
    ]


def test_egress_proxy_host_is_required() -> None:
    policy = {"mode": "ALLOW_ANY", "egressProxy": {"port": {"number": 3128}}}
    assert sidecar_errors({"outboundTrafficPolicy": policy}) == [
        "spec.outboundTrafficPolicy.egressProxy.host: required"
    ]


# ---------------------------------------------------------------- selector and emptiness
def test_empty_sidecar_is_rejected() -> None:
    assert sidecar_errors({}) == [
        "spec: empty configuration provided "
        "(no ingress, egress, outboundTrafficPolicy or inboundConnectionPool)"
    ]


def test_outbound_policy_alone_is_a_valid_sidecar() -> None:
    assert sidecar_errors({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}) == []


def test_selector_without_labels_warns() -> None:
    spec = {"workloadSelector": {}, **egress(HOSTS)}
    assert sidecar_errors(spec) == []
    assert warnings_of("Sidecar", spec) == [
        "spec.workloadSelector: workload selector specified without labels; "
        "applies to every workload in the namespace"
    ]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"app": "*"}, "spec.workloadSelector.labels[app]: wildcard is not supported in selector: app=*"),
        ({"": "x"}, "spec.workloadSelector.labels: empty key is not supported in selector"),
        ({"app": "a b"}, "spec.workloadSelector.labels[app]: invalid label value 'a b'"),
        ({"-bad": "x"}, "spec.workloadSelector.labels[-bad]: invalid label key '-bad'"),
    ],
)
def test_selector_labels_must_be_valid(labels: dict[str, str], message: str) -> None:
    assert sidecar_errors({"workloadSelector": {"labels": labels}, **egress(HOSTS)}) == [message]


def test_selector_label_keys_may_have_a_dns_prefix() -> None:
    labels = {"app.kubernetes.io/name": "reviews", "version": ""}
    assert sidecar_errors({"workloadSelector": {"labels": labels}, **egress(HOSTS)}) == []
