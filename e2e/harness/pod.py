"""A pod: one network namespace on the node bridge, its apps, optionally capture + an Envoy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.harness import apps, iptables
from e2e.harness.apps import HttpResult, TcpResult
from e2e.harness.certs import KeyPair
from e2e.harness.envoy import Envoy
from e2e.harness.loop import RequestLoop
from e2e.harness.netns import Netns, Proc


@dataclass
class Pod:
    name: str
    namespace: str
    ip: str
    ns: Netns
    labels: dict[str, str] = field(default_factory=dict)
    interception: str = "NONE"  # REDIRECT once capture() ran
    envoy: Envoy | None = None
    ports: list[int] = field(default_factory=list)  # container ports of the apps started

    @property
    def fqdn_id(self) -> str:
        return f"{self.name}.{self.namespace}"

    @property
    def workdir(self) -> Path:
        return self.ns.workdir

    # -- apps -----------------------------------------------------------------------------------

    def serve_http(self, port: int = 8080, bind: str = "0.0.0.0", *, status: int = 200) -> Proc:
        """The JSON echo; `status`: answer every request with that status (a failing backend).
        A path `/delay/<seconds>` answers after that long (a slow backend)."""
        self.ports.append(port)
        return apps.serve_http(self.ns, self.name, port, bind, status)

    def serve_https(self, port: int, keys: KeyPair, bind: str = "0.0.0.0") -> Proc:
        """The JSON echo inside TLS; its JSON also names the SNI the client sent ("sni")."""
        self.ports.append(port)
        return apps.serve_tcp(self.ns, self.name, "http", port, bind, "--cert", str(keys.cert),
                              "--key", str(keys.key))

    def serve_http_unix(self, name: str = "app.sock") -> Path:
        path = self.workdir / "uds" / name
        apps.serve_http_unix(self.ns, self.name, path)
        return path

    def serve_tcp_echo(self, port: int = 9000, bind: str = "0.0.0.0") -> Proc:
        self.ports.append(port)
        return apps.serve_tcp_echo(self.ns, self.name, port, bind)

    def serve_tls_echo(self, port: int, keys: KeyPair, *, client_ca: Path | None = None,
                       bind: str = "0.0.0.0") -> Proc:
        """tcp echo inside TLS; replies "<pod> sni=<name> <line>". `client_ca`: require client certs."""
        self.ports.append(port)
        extra = ["--cert", str(keys.cert), "--key", str(keys.key)]
        return apps.serve_tcp(self.ns, self.name, "tls-echo", port, bind,
                              *extra, *(["--ca", str(client_ca)] if client_ca else []))

    def serve_dual(self, port: int, bind: str = "0.0.0.0") -> Proc:
        """HTTP and tcp echo on one port (chosen by the first bytes of each connection)."""
        self.ports.append(port)
        return apps.serve_tcp(self.ns, self.name, "dual", port, bind)

    def serve_banner(self, port: int, bind: str = "0.0.0.0") -> Proc:
        """A server-first protocol: "<pod> hello" on connect, then echo."""
        self.ports.append(port)
        return apps.serve_tcp(self.ns, self.name, "banner", port, bind)

    # -- clients (run as root inside the pod: captured like any app) ------------------------------

    def http(self, url: str, **kw: Any) -> HttpResult:
        return apps.http(self.ns, url, **kw)

    def http_many(self, url: str, count: int, **kw: Any) -> list[HttpResult]:
        return apps.http_many(self.ns, url, count, **kw)

    def seen(self, path: str, port: int = 8080) -> dict[str, Any]:
        """What this pod's http app on `port` received for `path`: {"hits", "last"} (asked over
        loopback inside the pod, so the question is neither captured nor counted)."""
        r = apps.http(self.ns, f"http://127.0.0.1:{port}/_seen{path}")
        assert r.status == 200, f"{self.name} /_seen{path}: {r}"
        seen: dict[str, Any] = r.json()
        return seen

    def tcp(self, host: str, port: int, send: str = "ping", **kw: Any) -> TcpResult:
        return apps.tcp(self.ns, host, port, send, **kw)

    def tcp_many(self, host: str, port: int, count: int, send: str = "ping", **kw: Any) -> list[TcpResult]:
        return apps.tcp_many(self.ns, host, port, count, send, **kw)

    def request_loop(self, name: str, url: str, *, expect_pod: str | set[str], **kw: Any) -> RequestLoop:
        """Requests to `url` in the background until stopped (or the pod is removed)."""
        return RequestLoop(self.ns, name, url, expect_pod=expect_pod, **kw)

    # -- sidecar --------------------------------------------------------------------------------

    def capture(self) -> None:
        """istio-init: the REDIRECT rules; Envoy must then listen on 15001/15006."""
        iptables.apply(self.ns)
        self.interception = "REDIRECT"

    def start_envoy(self, bootstrap: dict[str, Any] | str, **kw: Any) -> Envoy:
        assert self.envoy is None, f"{self.name} already has an Envoy"
        self.envoy = Envoy.start(self.ns, bootstrap, **kw)
        return self.envoy

    def stop_envoy(self) -> None:
        if self.envoy:
            self.envoy.stop()
            self.envoy = None

    def manifest(self, ready: bool = True) -> dict[str, Any]:
        """The Kubernetes Pod object the server reads (labels, IP, readiness, ports)."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)},
            "spec": {"containers": [{"name": "app", "image": "e2e-app",
                                     "ports": [{"containerPort": p} for p in self.ports]}]},
            "status": {
                "phase": "Running",
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }

    def node_id(self) -> str:
        return f"sidecar~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.cluster.local"

    def debug_dump(self) -> str:
        parts = [f"--- pod {self.fqdn_id} ({self.ip}, ns {self.ns.name})"]
        for proc in self.ns.procs:
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"[{proc.name}: {state}]\n{proc.log_tail(30)}")
        return "\n".join(parts)
