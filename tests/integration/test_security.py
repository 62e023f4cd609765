"""Secure xDS (docs/security.md; istiod's `pilot/pkg/xds/auth.go`): TLS, mutual TLS and identity authorization.

Certificates are generated per test run (tests/support/certs.py). With `--client-ca`, a client's
SPIFFE (spiffe://TD/ns/NS/sa/SA) or DNS (SA.NS.svc) identity must match the namespace of the node
it claims and the service account of its Pod (else the node's SERVICE_ACCOUNT metadata); anything
else is refused with PERMISSION_DENIED (UNAUTHENTICATED when the certificate names no identity),
and counted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml

from tests.support.admin_http import admin_get
from tests.support.ads_client import AdsClient, node
from tests.support.certs import TestCA
from xds_server.app import App, ConfigError
from xds_server.config import ObjectMeta, Pod
from xds_server.config.parse import parse
from xds_server.config.refs import FrozenDict
from xds_server.resources import TypeUrl
from xds_server.settings import Settings
from xds_server.xds.auth import PeerIdentity, match, parse_dns, parse_spiffe

WEB = "sidecar~10.0.0.5~web-1.default~default.svc.cluster.local"  # Pod default/web-1, service account "web"
UNKNOWN = "sidecar~10.0.0.9~ghost-1.default~default.svc.cluster.local"  # no such Pod


def refusals(app: App, code: str) -> float:
    return app.metrics.registry.get_sample_value("xds_server_stream_refusals_total", {"code": code}) or 0.0


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


async def _app(ca: TestCA, client_ca: bool = True) -> App:
    server = ca.server()
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0, drain_seconds=0, tls_cert=server.cert_path,
                       tls_key=server.key_path, client_ca=ca.path if client_ca else None), sources=[])
    app.store.upsert("test", Pod(ObjectMeta("web-1", "default"), ips=("10.0.0.5",), ready=True,
                                 service_account="web"))
    await app.start()
    return app


@pytest.fixture
async def mtls(ca: TestCA) -> AsyncIterator[App]:
    app = await _app(ca)
    try:
        yield app
    finally:
        await app.stop(0)


def creds(ca: TestCA, name: str | None = None, **issue: tuple[str, ...]) -> grpc.ChannelCredentials:
    if name is None:
        return grpc.ssl_channel_credentials(ca.pem)
    pair = ca.issue(name, **issue)
    return grpc.ssl_channel_credentials(ca.pem, pair.key, pair.cert)


async def first_answer(app: App, credentials: grpc.ChannelCredentials, node_id: str = WEB, **metadata: str):
    """The first CDS response, or the status code the stream ended with."""
    client = AdsClient(f"127.0.0.1:{app.xds_port}", credentials=credentials)
    try:
        client.send(node=node(node_id, **metadata), type_url=TypeUrl.CLUSTER.value)
        try:
            return await client.recv()
        except grpc.aio.AioRpcError as e:
            return e.code()
    finally:
        await client.close()


def spiffe(ns: str, sa: str, td: str = "cluster.local") -> tuple[str, ...]:
    return (f"spiffe://{td}/ns/{ns}/sa/{sa}",)


# ------------------------------------------------------------------ parsing and matching
def test_spiffe_and_dns_identities_are_parsed_strictly() -> None:
    assert parse_spiffe("spiffe://cluster.local/ns/default/sa/web") == PeerIdentity(
        "spiffe://cluster.local/ns/default/sa/web", "default", "web")
    assert parse_spiffe("spiffe://other.domain/ns/a/sa/b").namespace == "a"  # any trust domain: the CA is the anchor
    for bad in ("spiffe://cluster.local/ns/default", "spiffe:///ns/a/sa/b", "spiffe://td/ns//sa/b",
                "spiffe://td/ns/a/sa/b/extra", "https://td/ns/a/sa/b", "spiffe://td/sa/b/ns/a", ""):
        assert parse_spiffe(bad) is None, bad
    assert parse_dns("web.default.svc") == PeerIdentity("web.default.svc", "default", "web")
    assert parse_dns("web.default.svc.cluster.local.").service_account == "web"
    for bad in ("default.svc", "web.default.pod", "*.default.svc", ".default.svc", "localhost"):
        assert parse_dns(bad) is None, bad


def test_match_needs_the_namespace_and_the_expected_service_account() -> None:
    ids = [PeerIdentity("a", "ns-a", "sa-1"), PeerIdentity("b", "ns-b", "sa-2")]
    assert match(ids, "ns-a") is None
    assert match(ids, "ns-b", "sa-2") is None
    assert "ns-b" in (match(ids, "ns-b", "sa-1") or "")  # namespace and account must come from one identity
    assert match(ids, "ns-c") is not None
    assert match([], "ns-a") is not None


# ------------------------------------------------------------------ mutual TLS over the wire
async def test_spiffe_identity_of_the_pods_namespace_and_service_account_is_served(mtls: App, ca: TestCA) -> None:
    resp = await first_answer(mtls, creds(ca, "web", uris=spiffe("default", "web")))
    assert resp.type_url == TypeUrl.CLUSTER.value and len(resp.resources) > 0
    assert refusals(mtls, "PERMISSION_DENIED") == 0


async def test_dns_identity_is_accepted(mtls: App, ca: TestCA) -> None:
    resp = await first_answer(mtls, creds(ca, "web-dns", dns=("web.default.svc",)))
    assert resp.type_url == TypeUrl.CLUSTER.value


async def test_another_namespace_is_permission_denied_and_counted(mtls: App, ca: TestCA,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    assert await first_answer(mtls, creds(ca, "intruder", uris=spiffe("other", "web"))) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert refusals(mtls, "PERMISSION_DENIED") == 1
    assert not mtls.services.connections
    [record] = [r for r in caplog.records if "PERMISSION_DENIED" in r.getMessage()]
    assert record.levelname == "WARNING" and "spiffe://cluster.local/ns/other/sa/web" in record.getMessage()
    assert record.exc_info is None


async def test_another_service_account_than_the_pods_is_denied(mtls: App, ca: TestCA) -> None:
    # The Pod names service account "web"; the node's own SERVICE_ACCOUNT claim cannot override it.
    assert await first_answer(mtls, creds(ca, "other-sa", uris=spiffe("default", "db")),
                              SERVICE_ACCOUNT="db") == grpc.StatusCode.PERMISSION_DENIED


async def test_node_metadata_service_account_is_checked_when_no_pod_is_known(mtls: App, ca: TestCA) -> None:
    client_cert = creds(ca, "ghost", uris=spiffe("default", "ghost"))
    assert await first_answer(mtls, client_cert, UNKNOWN, SERVICE_ACCOUNT="other") == \
        grpc.StatusCode.PERMISSION_DENIED
    resp = await first_answer(mtls, client_cert, UNKNOWN, SERVICE_ACCOUNT="ghost")
    assert resp.type_url == TypeUrl.CLUSTER.value
    resp = await first_answer(mtls, client_cert, UNKNOWN, SERVICE_ACCOUNT="spiffe://cluster.local/ns/default/sa/ghost")
    assert resp.type_url == TypeUrl.CLUSTER.value
    # Nothing names a service account: the namespace alone decides (istiod's rule).
    resp = await first_answer(mtls, client_cert, UNKNOWN)
    assert resp.type_url == TypeUrl.CLUSTER.value


async def test_claiming_another_namespace_through_metadata_is_denied(mtls: App, ca: TestCA) -> None:
    # The node id names default/web-1 but NAMESPACE says "prod": the proxy is in "prod".
    assert await first_answer(mtls, creds(ca, "web-2", uris=spiffe("default", "web")), WEB,
                              NAMESPACE="prod") == grpc.StatusCode.PERMISSION_DENIED


async def test_certificate_without_an_identity_is_unauthenticated(mtls: App, ca: TestCA) -> None:
    assert await first_answer(mtls, creds(ca, "anonymous", dns=("localhost",))) == grpc.StatusCode.UNAUTHENTICATED
    assert await first_answer(mtls, creds(ca, "bare")) == grpc.StatusCode.UNAUTHENTICATED
    assert refusals(mtls, "UNAUTHENTICATED") == 2


async def test_no_client_certificate_or_a_foreign_ca_never_gets_a_stream(mtls: App, ca: TestCA,
                                                                         tmp_path: Path) -> None:
    assert await first_answer(mtls, creds(ca)) == grpc.StatusCode.UNAVAILABLE  # the handshake fails
    other = TestCA(tmp_path / "other", "other-ca")
    pair = other.spiffe_client("forged", "default", "web")
    assert await first_answer(mtls, grpc.ssl_channel_credentials(ca.pem, pair.key, pair.cert)) == \
        grpc.StatusCode.UNAVAILABLE
    assert not mtls.services.connections


async def test_denied_clients_leave_a_served_proxy_alone(mtls: App, ca: TestCA) -> None:
    good = AdsClient(f"127.0.0.1:{mtls.xds_port}", credentials=creds(ca, "web", uris=spiffe("default", "web")))
    try:
        good.send(node=node(WEB), type_url=TypeUrl.CLUSTER.value)
        first = await good.recv()
        for i in range(5):
            assert await first_answer(mtls, creds(ca, f"bad-{i}", uris=spiffe(f"ns-{i}", "web"))) == \
                grpc.StatusCode.PERMISSION_DENIED
        good.send(type_url=TypeUrl.CLUSTER.value, version_info=first.version_info, response_nonce=first.nonce)
        await good.expect_none()
        assert len(mtls.services.connections) == 1
        assert refusals(mtls, "PERMISSION_DENIED") == 5
    finally:
        await good.close()


async def test_csds_over_mtls_shows_a_caller_only_its_own_namespaces_proxies(mtls: App, ca: TestCA) -> None:
    from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

    target = f"127.0.0.1:{mtls.xds_port}"
    web = AdsClient(target, credentials=creds(ca, "web", uris=spiffe("default", "web")))
    prod_node = "sidecar~10.0.0.8~api-1.prod~prod.svc.cluster.local"
    prod = AdsClient(target, credentials=creds(ca, "api", uris=spiffe("prod", "api")))
    try:
        for client, node_id in ((web, WEB), (prod, prod_node)):
            client.send(node=node(node_id), type_url=TypeUrl.CLUSTER.value)
            await client.recv()

        async def visible(name: str, ns: str, sa: str) -> list[str]:
            async with grpc.aio.secure_channel(target, creds(ca, name, uris=spiffe(ns, sa))) as channel:
                stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
                resp = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest())
                return sorted(c.node.id for c in resp.config)

        assert await visible("ops", "default", "ops") == [WEB]
        assert await visible("prod-ops", "prod", "ops") == [prod_node]
        assert await visible("nobody", "elsewhere", "x") == []
        assert await visible("istiod", "istio-system", "istiod") == sorted([WEB, prod_node])  # the control plane
    finally:
        await web.close()
        await prod.close()


# ------------------------------------------------------------------ TLS without client certificates
async def test_tls_without_client_ca_serves_any_client_and_plaintext_clients_fail(ca: TestCA) -> None:
    app = await _app(ca, client_ca=False)
    try:
        resp = await first_answer(app, creds(ca), UNKNOWN, NAMESPACE="anything")
        assert resp.type_url == TypeUrl.CLUSTER.value
        plain = AdsClient(f"127.0.0.1:{app.xds_port}")
        try:
            plain.send(node=node(WEB), type_url=TypeUrl.CLUSTER.value)
            assert await plain.status() == grpc.StatusCode.UNAVAILABLE
        finally:
            await plain.close()
    finally:
        await app.stop(0)


async def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=-1, tls_cert=str(tmp_path / "nope.pem"),
                       tls_key=str(tmp_path / "nope-key.pem")), sources=[])
    with pytest.raises(ConfigError, match="nope"):
        await app.start()
    await app.stop(0)


async def test_invalid_or_mismatched_tls_material_is_a_clear_config_error(tmp_path: Path, ca: TestCA) -> None:
    server, other = ca.server(), ca.issue("other", dns=("x.svc",), server=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for cert, key, ca_file, wanted in (
            (str(garbage), str(garbage), None, "not a PEM certificate"),
            (server.cert_path, other.key_path, None, "not a PEM certificate and its private key"),
            (server.cert_path, server.key_path, str(garbage), "--client-ca"),
    ):
        app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=-1, tls_cert=cert, tls_key=key,
                           client_ca=ca_file), sources=[])
        with pytest.raises(ConfigError, match=wanted):
            await app.start()
        await app.stop(0)


# ------------------------------------------------------------------ admin port and debug views
def test_admin_port_binds_loopback_by_default() -> None:
    from xds_server.cli import build_parser

    args = build_parser().parse_args(["serve", "--config-dir", "."])
    assert args.admin_address == ("127.0.0.1", 15014)
    assert Settings().admin_host == "127.0.0.1"


SIDECAR_TLS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: web, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: web}}}}
  ingress:
  - port: {{number: 8443, protocol: HTTPS, name: https}}
    defaultEndpoint: 127.0.0.1:8080
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
"""


async def test_debug_views_reference_ingress_private_keys_by_path_never_inline(tmp_path: Path, ca: TestCA) -> None:
    pair = ca.issue("ingress", dns=("web.default.svc",), server=True)
    sidecar, problems = parse(yaml.safe_load(SIDECAR_TLS.format(cert=pair.cert_path, key=pair.key_path)))
    assert sidecar is not None and not [p for p in problems if not p.warning]
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0, drain_seconds=0), sources=[])
    app.store.upsert("test", Pod(ObjectMeta("web-1", "default", labels=FrozenDict(app="web")), ips=("10.0.0.5",),
                                 ready=True, service_account="web"))
    app.store.upsert("test", sidecar)
    await app.start()
    client = AdsClient(f"127.0.0.1:{app.xds_port}")
    try:
        client.send(node=node(WEB), type_url=TypeUrl.LISTENER.value)
        await client.recv()
        secret = pair.key.decode().splitlines()[1]  # a line of the key's base64 body
        seen = []
        for path in ("/debug/config_dump?proxy=web-1.default", "/debug/adsz", "/debug/syncz", "/debug/configz",
                     "/metrics"):
            code, body = await admin_get(app.admin_port, path)
            assert code == 200, (path, body)
            assert secret not in body and "PRIVATE KEY" not in body, path
            seen.append(body)
        dump = json.loads(seen[0])
        assert pair.key_path in json.dumps(dump)  # referenced by path
    finally:
        await client.close()
        await app.stop(0)
