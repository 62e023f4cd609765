"""A real Envoy accepts every inbound listener and cluster, and serves traffic through them.

`envoy --mode validate` checks each form offline; one test runs Envoy on loopback with bound
ingress listeners (a NONE-mode proxy, as the demo runs) and sends HTTP, HTTPS and mTLS requests
through them to small backends on TCP and unix sockets.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.translate.inbound_support import (
    ENVOY,
    assert_envoy_accepts,
    bootstrap,
    build,
    pod,
    service,
    service_entry,
    sidecar,
    sport,
)
from xds_server.config import MeshConfig

pytestmark = pytest.mark.envoy


# ------------------------------------------------------------------ certificates
@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
           *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test-ca", ca_key, _name("test-ca"), ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    return Certs(
        ca=_write(d / "ca.pem", cert=ca),
        server_cert=_write(d / "server.pem", cert=_issue("server", server_key, ca.subject, ca_key, ca=False)),
        server_key=_write(d / "server-key.pem", key=server_key),
        client_cert=_write(d / "client.pem", cert=_issue("client", client_key, ca.subject, ca_key, ca=False)),
        client_key=_write(d / "client-key.pem", key=client_key),
    )


# ------------------------------------------------------------------ validate mode
def test_envoy_accepts_service_derived_inbound_in_every_interception_mode() -> None:
    svc = service("reviews", sport(9080, "http"), sport(9090, "grpc", 8090), sport(7000, "unnamed"),
                  sport(3306, "mysql"), sport(5353, "dns", l4="UDP"))
    se = service_entry("""
hosts: [reviews.internal]
ports: [{number: 9000, name: tcp, protocol: TCP, targetPort: 8000}]
workloadSelector: {labels: {app: reviews}}
""")
    for mode in ("REDIRECT", "TPROXY"):
        assert_envoy_accepts(build(pod(), svc, se, metadata={"INTERCEPTION_MODE": mode}).parts)
    assert_envoy_accepts(build(pod(), svc, mesh=MeshConfig(inbound_traffic_policy="LOCALHOST")).parts)
    ip6 = "fd00::7"
    assert_envoy_accepts(build(pod(ips=(ip6,)), svc, ip=ip6).parts)


def test_envoy_accepts_every_ingress_form_and_pool(tmp_path: Path) -> None:
    sock = tmp_path / "app.sock"
    pool = {"tcp": {"maxConnections": 5, "connectTimeout": "1s", "maxConnectionDuration": "60s",
                    "idleTimeout": "9s", "tcpKeepalive": {"probes": 2, "time": "7s", "interval": "3s"}},
            "http": {"http1MaxPendingRequests": 1, "http2MaxRequests": 2, "maxRetries": 3,
                     "maxRequestsPerConnection": 4, "idleTimeout": "5s", "maxConcurrentStreams": 6}}
    sc = sidecar({
        "inboundConnectionPool": {"http": {"useClientProtocol": True}},
        "ingress": [
            {"port": {"number": 9080, "protocol": "HTTP", "name": "a"}, "defaultEndpoint": "127.0.0.1:8080"},
            {"port": {"number": 9081, "protocol": "GRPC", "name": "b"}, "defaultEndpoint": "[::1]:8081",
             "connectionPool": pool},
            {"port": {"number": 9082, "protocol": "TCP", "name": "c"}, "defaultEndpoint": "0.0.0.0:8082",
             "connectionPool": pool},
            {"port": {"number": 9083, "name": "d"}, "defaultEndpoint": "[::]:8083"},
            {"port": {"number": 9084, "protocol": "HTTP", "name": "e"}, "defaultEndpoint": f"unix://{sock}"},
            {"port": {"number": 9085, "protocol": "HTTP", "name": "f"}, "defaultEndpoint": ":8085"},
            {"port": {"number": 9086, "protocol": "HTTP", "name": "g"}},
            {"port": {"number": 9087, "protocol": "HTTP", "name": "h"}, "captureMode": "NONE",
             "bind": "127.0.0.1", "defaultEndpoint": "127.0.0.1:8087"},
            {"port": {"number": 9088, "name": "i"}, "captureMode": "NONE", "defaultEndpoint": "127.0.0.1:8088"},
        ],
    })
    for mode in ("REDIRECT", "TPROXY", "NONE"):
        parts = build(pod(ips=("10.244.1.7", "fd00::7")), sidecar_obj=sc, metadata={
            "INTERCEPTION_MODE": mode, "INSTANCE_IPS": "10.244.1.7,fd00::7"}).parts
        assert_envoy_accepts(parts)


def test_envoy_accepts_simple_and_mutual_ingress_tls(certs: Certs) -> None:
    tls = {"serverCertificate": str(certs.server_cert), "privateKey": str(certs.server_key)}
    sc = sidecar({"ingress": [
        {"port": {"number": 8443, "protocol": "HTTPS", "name": "a"}, "defaultEndpoint": "127.0.0.1:8080",
         "tls": {"mode": "SIMPLE", **tls, "minProtocolVersion": "TLSV1_2", "maxProtocolVersion": "TLSV1_3",
                 "cipherSuites": ["ECDHE-ECDSA-AES128-GCM-SHA256"]}},
        {"port": {"number": 8444, "protocol": "TLS", "name": "b"}, "defaultEndpoint": "127.0.0.1:8081",
         "tls": {"mode": "MUTUAL", **tls, "caCertificates": str(certs.ca)}},
        {"port": {"number": 8445, "protocol": "HTTPS", "name": "c"}, "captureMode": "NONE",
         "tls": {"mode": "MUTUAL", **tls, "caCertificates": str(certs.ca)}},
    ]})
    for mode in ("REDIRECT", "NONE"):
        assert_envoy_accepts(build(pod(), sidecar_obj=sc, metadata={"INTERCEPTION_MODE": mode}).parts)


# ------------------------------------------------------------------ real traffic
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"backend": self.server.label, "path": self.path,  # type: ignore[attr-defined]
                           "xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass

    def address_string(self) -> str:  # unix sockets have no (host, port)
        return "local"


class _TCPBackend(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class _UnixBackend(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _start(server: socketserver.BaseServer, label: str) -> socketserver.BaseServer:
    server.label = label  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"envoy exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    tcp = _start(_TCPBackend(("127.0.0.1", 0), _Handler), "tcp")
    sock = tmp_path / "app.sock"
    uds = _start(_UnixBackend(str(sock), _Handler), "uds")
    try:
        yield tcp.server_address[1], sock  # type: ignore[misc]
    finally:
        for server in (tcp, uds):
            server.shutdown()
            server.server_close()


def test_bound_ingress_listeners_serve_http_https_and_mtls(tmp_path: Path, certs: Certs,
                                                           backends: tuple[int, Path]) -> None:
    app_port, sock = backends
    plain, uds, https, mtls = (_free_port() for _ in range(4))
    tls = {"serverCertificate": str(certs.server_cert), "privateKey": str(certs.server_key)}

    def ingress(port: int, protocol: str, endpoint: str, **extra: Any) -> dict[str, Any]:
        return {"port": {"number": port, "protocol": protocol, "name": f"p{port}"}, "bind": "127.0.0.1",
                "defaultEndpoint": endpoint, **extra}

    sc = sidecar({"ingress": [
        ingress(plain, "HTTP", f"127.0.0.1:{app_port}"),
        ingress(uds, "HTTP", f"unix://{sock}"),
        ingress(https, "HTTPS", f"127.0.0.1:{app_port}", tls={"mode": "SIMPLE", **tls}),
        ingress(mtls, "HTTPS", f"127.0.0.1:{app_port}", tls={"mode": "MUTUAL", **tls, "caCertificates": str(certs.ca)}),
    ]})
    parts = build(pod(), sidecar_obj=sc, metadata={"INTERCEPTION_MODE": "NONE"}).parts
    assert sorted(b.name for b in parts.listeners) == sorted(f"127.0.0.1_{p}" for p in (plain, uds, https, mtls))
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(parts)))
    proc = subprocess.Popen([str(ENVOY), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                             "--base-id", str(_free_port()), "-l", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for port in (plain, uds, https, mtls):
            _wait_for_port(port, proc)

        def get(url: str, context: ssl.SSLContext | None = None) -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                return json.loads(resp.read())

        assert get(f"http://127.0.0.1:{plain}/a")["backend"] == "tcp"
        assert get(f"http://127.0.0.1:{uds}/b")["backend"] == "uds"

        server_only = ssl.create_default_context(cafile=str(certs.ca))
        assert get(f"https://127.0.0.1:{https}/c", server_only)["backend"] == "tcp"

        with pytest.raises(OSError):  # no client certificate: the handshake is refused
            get(f"https://127.0.0.1:{mtls}/d", server_only)
        client = ssl.create_default_context(cafile=str(certs.ca))
        client.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        reply = get(f"https://127.0.0.1:{mtls}/d", client)
        assert reply["backend"] == "tcp"
        assert "Subject=" in reply["xfcc"]  # the verified client identity reaches the app
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
