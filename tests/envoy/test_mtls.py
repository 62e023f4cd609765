"""A real Envoy over mutual TLS, with the bootstrap `xds-server bootstrap --tls-*` prints.

The server requires client certificates (--client-ca). An Envoy whose SPIFFE identity matches its
Pod's namespace and service account is served; one with a certificate for another namespace is
refused with PERMISSION_DENIED on every attempt (counted) and never gets a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.certs import SERVER_NAME, TestCA
from tests.support.envoy import LocalEnvoy
from tests.support.resources import eds_cluster, endpoints, snapshot, stand_in
from xds_server.app import App
from xds_server.config import ObjectMeta, Pod
from xds_server.settings import Settings

pytestmark = pytest.mark.envoy
NODE_ID = "sidecar~10.0.0.5~web-1.default~default.svc.cluster.local"
REPO = Path(__file__).resolve().parents[2]


def cli_bootstrap(port: int, ca: str, cert: str, key: str) -> dict:
    """The bootstrap as a user gets it: from the command line."""
    out = subprocess.run(
        [sys.executable, "-m", "xds_server", "bootstrap", "--node-id", NODE_ID, "--xds-address", f"127.0.0.1:{port}",
         "--metadata", "NAMESPACE=default", "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key,
         "--tls-server-name", SERVER_NAME, "--format", "json"],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout)


@pytest.fixture
async def mtls_app(tmp_path: Path):
    ca = TestCA(tmp_path / "pki")
    server = ca.server()
    snap = snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)))
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0, drain_seconds=0, tls_cert=server.cert_path,
                       tls_key=server.key_path, client_ca=ca.path), sources=[], generate=stand_in(lambda proxy: snap))
    app.store.upsert("test", Pod(ObjectMeta("web-1", "default"), ips=("10.0.0.5",), ready=True,
                                 service_account="web"))
    await app.start()
    try:
        yield app, ca
    finally:
        await app.stop(0)


def refusals(app: App, code: str) -> float:
    return app.metrics.registry.get_sample_value("xds_server_stream_refusals_total", {"code": code}) or 0.0


async def test_envoy_with_its_pods_identity_is_served_over_mtls(mtls_app) -> None:
    app, ca = mtls_app
    pair = ca.spiffe_client("web", "default", "web")
    boot = cli_bootstrap(app.xds_port, ca.path, pair.cert_path, pair.key_path)
    tls = boot["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert tls["sni"] == SERVER_NAME
    with LocalEnvoy(NODE_ID, bootstrap=boot) as envoy:
        await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a"], what="cluster a over mTLS")
        await envoy.until(lambda: envoy.stat("control_plane.connected_state") == 1, what="connected")
        [conn] = app.services.connections.values()
        assert conn.proxy.key == NODE_ID
        assert envoy.rejected() == 0
        assert envoy.stat("cluster.xds-grpc.ssl.handshake") >= 1
    assert refusals(app, "PERMISSION_DENIED") == 0


async def test_envoy_claiming_another_namespace_is_refused_and_gets_nothing(mtls_app) -> None:
    app, ca = mtls_app
    pair = ca.spiffe_client("intruder", "attacker", "web")
    boot = cli_bootstrap(app.xds_port, ca.path, pair.cert_path, pair.key_path)
    with LocalEnvoy(NODE_ID, bootstrap=boot) as envoy:
        await envoy.until(lambda: refusals(app, "PERMISSION_DENIED") >= 2, timeout=20,
                          what="refused, and refused again on retry")
        assert envoy.dynamic_names("clusters") == []
        assert envoy.stat("cluster_manager.cds.update_success") == 0  # not one response, ever
        assert not app.services.connections
        # Envoy counts a stream as connected from its start until the refusal closes it, and its
        # retries open new ones: between them it reads disconnected (one read could hit a retry).
        await envoy.until(lambda: envoy.stat("control_plane.connected_state") == 0, timeout=20,
                          what="Envoy reads disconnected between retries")


async def test_envoy_that_does_not_trust_the_server_never_connects(mtls_app, tmp_path: Path) -> None:
    app, ca = mtls_app
    other = TestCA(tmp_path / "other", "other-ca")
    pair = ca.spiffe_client("web-2", "default", "web")
    boot = cli_bootstrap(app.xds_port, other.path, pair.cert_path, pair.key_path)  # verifies against another CA
    with LocalEnvoy(NODE_ID, bootstrap=boot) as envoy:
        await envoy.until(lambda: envoy.stat("cluster.xds-grpc.ssl.fail_verify_error") >= 1, timeout=20,
                          what="server certificate rejected by Envoy")
        assert envoy.dynamic_names("clusters") == [] and not app.services.connections
