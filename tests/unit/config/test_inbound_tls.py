"""Sidecar `inboundTls` (the February 2020 edition, seed 002): read as the ingress listeners' `tls`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.unit.config.util import errors_of, istio, messages, warnings_of
from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioSidecar
from xds_server.config.parse import parse

SEED = Path(__file__).parents[2] / "fixtures" / "manifests" / "seed-inbound-tls" / "sidecar-ratings-inbound-tls.yaml"
SIMPLE = {"mode": "SIMPLE", "serverCertificate": "/etc/certs/servercert.pem", "privateKey": "/etc/certs/privatekey.pem"}


def listener(number: int, protocol: str, **extra: Any) -> dict[str, Any]:
    return {"port": {"number": number, "protocol": protocol, "name": f"p{number}"},
            "defaultEndpoint": "unix:///var/run/someuds.sock", **extra}


def sidecar(spec: dict[str, Any]) -> IstioSidecar:
    obj, problems = parse(istio("Sidecar", spec, namespace="prod-us1"))
    assert messages(problems) == [] and isinstance(obj, IstioSidecar)
    return obj


def test_seed_002_ratings_sidecar_terminates_tls_on_9443_only() -> None:
    doc, _peer_authentication = yaml.safe_load_all(SEED.read_text())
    obj, problems = parse(doc, "seed:0")
    assert isinstance(obj, IstioSidecar)
    assert [str(p) for p in problems] == [
        "seed:0: Sidecar/prod-us1/ratings: spec.ingress[1].inboundTls: read as this listener's tls (later editions "
        "of the Sidecar API name the field tls)"]
    assert all(p.warning for p in problems)
    http, https = obj.spec.ingress
    assert not http.HasField("tls")
    assert https.tls.mode == pb.ServerTLSSettings.SIMPLE
    assert https.tls.server_certificate == "/etc/certs/servercert.pem"
    assert https.tls.private_key == "/etc/certs/privatekey.pem"
    assert not https.HasField("inbound_tls") and not obj.spec.HasField("inbound_tls")


def test_the_mapped_listener_is_exactly_what_the_same_sidecar_written_with_tls_gives() -> None:
    legacy = sidecar({"ingress": [listener(9443, "HTTPS", inboundTls=SIMPLE)]})
    modern = sidecar({"ingress": [listener(9443, "HTTPS", tls=SIMPLE)]})
    assert legacy.spec == modern.spec


def test_sidecar_level_inbound_tls_is_inherited_by_tls_listeners_without_their_own() -> None:
    own = {**SIMPLE, "serverCertificate": "/own.pem"}
    obj = sidecar({"inboundTls": SIMPLE, "ingress": [
        listener(9080, "HTTP"), listener(9443, "HTTPS"), listener(9444, "TLS", tls=own),
        listener(9445, "HTTPS", inboundTls=own)]})
    plain, inherited, modern, legacy = obj.spec.ingress
    assert not plain.HasField("tls")
    assert inherited.tls.server_certificate == "/etc/certs/servercert.pem"
    assert modern.tls.server_certificate == legacy.tls.server_certificate == "/own.pem"
    both = {"inboundTls": SIMPLE, "ingress": [listener(9080, "HTTP"), listener(9443, "HTTPS")]}
    assert warnings_of("Sidecar", both) == [
        "spec.ingress[0].port.protocol: HTTP is not HTTPS or TLS: the Sidecar-level spec.inboundTls does not apply "
        "to this listener",
        "spec.ingress[1]: inherits the Sidecar-level spec.inboundTls as its tls",
    ]


def test_tls_and_inbound_tls_on_one_listener_is_a_conflict() -> None:
    assert errors_of("Sidecar", {"ingress": [listener(9443, "HTTPS", tls=SIMPLE, inboundTls=SIMPLE)]}) == [
        "spec.ingress[0].inboundTls: conflicts with tls on the same listener (inboundTls is the 2020 name of tls; "
        "set one)"]


def test_inbound_tls_gets_the_ingress_tls_rules_at_the_field_the_user_wrote() -> None:
    assert errors_of("Sidecar", {"ingress": [listener(9080, "HTTP", inboundTls={"mode": "MUTUAL"})]}) == [
        "spec.ingress[0].port.protocol: must be HTTPS or TLS when inboundTls is set (got HTTP)",
        "spec.ingress[0].inboundTls.serverCertificate: required with MUTUAL TLS",
        "spec.ingress[0].inboundTls.privateKey: required with MUTUAL TLS",
        "spec.ingress[0].inboundTls.caCertificates: required with MUTUAL TLS (the client CA bundle)",
    ]
    assert errors_of("Sidecar", {"inboundTls": {"mode": "ISTIO_MUTUAL"}, "ingress": [listener(9443, "HTTPS")]}) == [
        "spec.inboundTls.mode: cannot be ISTIO_MUTUAL in sidecar ingress tls"]


def test_translation_terminates_tls_for_the_seed_sidecar_without_knowing_inbound_tls() -> None:
    from tests.unit.translate.inbound_support import POD_IP, build, pod, service, sport, tls_context

    doc, _ = yaml.safe_load_all(SEED.read_text())
    obj, _problems = parse({**doc, "metadata": {**doc["metadata"], "namespace": pod().meta.namespace}})
    assert isinstance(obj, IstioSidecar)
    ratings = {"app": "ratings"}  # what the seed's workloadSelector selects
    r = build(pod(labels=ratings), service("ratings", sport(9080, "http"), sport(9443, "https"), selector=ratings),
              sidecar_obj=obj)
    (cert,) = tls_context(r.chain(f"{POD_IP}_9443")).common_tls_context.tls_certificates
    assert (cert.certificate_chain.filename, cert.private_key.filename) == (
        "/etc/certs/servercert.pem", "/etc/certs/privatekey.pem")
    assert not r.chain(f"{POD_IP}_9080").HasField("transport_socket")
