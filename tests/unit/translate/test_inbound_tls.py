"""Sidecar ingress `tls` (istiod's `listener.go` BuildListenerTLSContext, with the project's file-based,
Sidecar-only decision: README, deliberate difference 3)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import common_pb2

from tests.unit.translate.inbound_support import (
    POD_IP,
    build,
    hcm,
    listener_filter_names,
    pod,
    sidecar,
    tcp,
    tls_context,
)

CERT, KEY, CA = "/etc/certs/servercert.pem", "/etc/certs/privatekey.pem", "/etc/certs/ca.pem"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def tls_sidecar(protocol: str = "HTTPS", port: int = 80, **tls: Any) -> Any:
    settings = {"mode": "SIMPLE", "serverCertificate": CERT, "privateKey": KEY, **tls}
    return sidecar({"ingress": [
        {"port": {"number": port, "protocol": protocol, "name": "secure"},
         "defaultEndpoint": "unix:///var/run/someuds.sock", "tls": settings},
        {"port": {"number": 9080, "protocol": "HTTP", "name": "plain"}},
    ]})


def test_seed_simple_https_terminates_tls_then_routes_http() -> None:
    r = build(pod(), sidecar_obj=tls_sidecar())
    chain = r.chain(f"{POD_IP}_80")
    m = chain.filter_chain_match
    assert (m.destination_port.value, m.transport_protocol, list(m.application_protocols)) == (80, "tls", [])
    ctx = tls_context(chain)
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    (cert,) = common.tls_certificates
    assert (cert.certificate_chain.filename, cert.private_key.filename) == (CERT, KEY)
    assert not ctx.require_client_certificate.value
    assert not common.HasField("validation_context")
    assert hcm(chain).route_config.virtual_hosts[0].routes[0].route.cluster == "inbound|80||"


def test_private_keys_are_referenced_by_path_never_inlined() -> None:
    r = build(pod(), sidecar_obj=tls_sidecar())
    key = tls_context(r.chain(f"{POD_IP}_80")).common_tls_context.tls_certificates[0].private_key
    assert key.WhichOneof("specifier") == "filename"


def test_tls_inspector_runs_only_for_tls_ports() -> None:
    r = build(pod(), sidecar_obj=tls_sidecar())
    names = listener_filter_names(r.virtual)
    assert names.index(TLS_INSPECTOR) < names.index("envoy.filters.listener.http_inspector")
    (inspector,) = [f for f in r.virtual.listener_filters if f.name == TLS_INSPECTOR]
    enabled_on = inspector.filter_disabled.not_match.destination_port_range
    assert (enabled_on.start, enabled_on.end) == (80, 81)


def test_mutual_tls_requires_a_client_certificate_signed_by_the_ca() -> None:
    r = build(pod(), sidecar_obj=tls_sidecar(mode="MUTUAL", caCertificates=CA, caCrl="/etc/certs/crl.pem",
                                             verifyCertificateSpki=["spki"], verifyCertificateHash=["ab:cd"]))
    ctx = tls_context(r.chain(f"{POD_IP}_80"))
    assert ctx.require_client_certificate.value
    validation = ctx.common_tls_context.validation_context
    assert validation.trusted_ca.filename == CA
    assert validation.crl.filename == "/etc/certs/crl.pem"
    assert list(validation.verify_certificate_spki) == ["spki"]
    assert list(validation.verify_certificate_hash) == ["ab:cd"]


def test_tls_protocol_terminates_into_tcp_proxy_without_http_alpn() -> None:
    r = build(pod(), sidecar_obj=tls_sidecar(protocol="TLS", port=5432))
    chain = r.chain(f"{POD_IP}_5432")
    assert chain.filter_chain_match.transport_protocol == "tls"
    assert tcp(chain).cluster == "inbound|5432||"
    assert not tls_context(chain).common_tls_context.alpn_protocols


def test_tls_versions_and_cipher_suites_are_passed_through() -> None:
    r = build(pod(), sidecar_obj=tls_sidecar(minProtocolVersion="TLSV1_2", maxProtocolVersion="TLSV1_3",
                                             cipherSuites=["ECDHE-RSA-AES128-GCM-SHA256",
                                                           "ECDHE-RSA-AES128-GCM-SHA256", "AES256-SHA"]))
    params = tls_context(r.chain(f"{POD_IP}_80")).common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert list(params.cipher_suites) == ["ECDHE-RSA-AES128-GCM-SHA256", "AES256-SHA"]


def test_tls_on_a_bound_listener_enables_the_inspector_for_its_port() -> None:
    r = build(pod(), sidecar_obj=tls_sidecar(), metadata={"INTERCEPTION_MODE": "NONE"})
    lst = r.listeners[f"{POD_IP}_80"]
    assert listener_filter_names(lst) == [TLS_INSPECTOR]
    assert tls_context(r.chain(f"{POD_IP}_80", listener=f"{POD_IP}_80")).common_tls_context.tls_certificates


@pytest.mark.parametrize("tls", [
    {"mode": "MUTUAL"},  # no CA to check clients against
    {"mode": "ISTIO_MUTUAL"},
    {"mode": "PASSTHROUGH"},
    {"credentialName": "reviews-cert"},  # would need SDS
    {"privateKey": ""},
])
def test_tls_this_control_plane_cannot_serve_leaves_the_port_in_plaintext(tls: dict[str, Any]) -> None:
    r = build(pod(), sidecar_obj=tls_sidecar(**tls))
    (chain,) = r.chains(f"{POD_IP}_80")
    assert chain.filter_chain_match.transport_protocol == "raw_buffer"
    assert not chain.HasField("transport_socket")
    assert tcp(chain).cluster == "inbound|80||"  # HTTPS not terminated stays opaque TCP
