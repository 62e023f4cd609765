"""Starting the tiny apps in a namespace and making requests from inside one.

Both sides are stdlib scripts run by this interpreter with `-I -S` (no site-packages, ~20 ms
start), so pods need nothing installed and clients run as root, i.e. not as uid 1337: their
traffic is captured like an application's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.harness.netns import Netns, Proc

HERE = Path(__file__).resolve().parent
APPSERVER = str(HERE / "appserver.py")
NETCLIENT = str(HERE / "netclient.py")
PYTHON = [sys.executable, "-I", "-S"]


@dataclass(frozen=True)
class HttpResult:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    error: str = ""
    kind: str = ""  # refused | reset | timeout | closed | unreachable | other, when error
    elapsed: float = 0.0  # seconds from connecting to the end of the response (or the error)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HttpResult:
        return cls(data.get("status"), data.get("headers", {}), data.get("body", ""),
                   data.get("error", ""), data.get("kind", ""), data.get("elapsed", 0.0))

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def served_by(self) -> str | None:
        """The pod name our http app put in the reply, or None (error, or not our app)."""
        return self.headers.get("x-served-by")

    def __str__(self) -> str:
        if self.error:
            return f"<error {self.kind}: {self.error}>"
        return f"<{self.status} {self.body[:300]!r}>"


@dataclass(frozen=True)
class TlsClient:
    """How a client speaks TLS: the SNI it sends (None: the URL host), the CA it verifies the
    server against (None: no verification), the client certificate it presents (if any)."""

    sni: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def args(self) -> list[str]:
        pairs = (("--sni", self.sni), ("--ca", self.ca), ("--cert", self.cert), ("--key", self.key))
        return [a for flag, value in pairs if value for a in (flag, str(value))]


@dataclass(frozen=True)
class TcpResult:
    reply: str = ""
    error: str = ""
    kind: str = ""


def http(
    ns: Netns,
    url: str,
    *,
    host: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    unix: str | None = None,
    timeout: float = 5.0,
    tls: TlsClient | None = None,
) -> HttpResult:
    """One HTTP/1.1 request from inside `ns` on a fresh connection (https:// URLs: TLS per `tls`)."""
    args = _http_args(url, host, method, headers, unix, timeout) + (tls.args() if tls else [])
    out = ns.exec(*PYTHON, NETCLIENT, *args, timeout=timeout + 15)
    return HttpResult.from_json(json.loads(out))


def http_many(ns: Netns, url: str, count: int, *, host: str | None = None,
              headers: dict[str, str] | None = None, parallel: bool = False,
              timeout: float = 5.0, keep_alive: bool = False) -> list[HttpResult]:
    """`count` requests, each on its own connection (so each is load-balanced separately even
    without a sidecar): one after another, or with `parallel` all started at once (all in flight
    together); `keep_alive`: one after another on one connection (faster; a sidecar routes and
    load-balances every request of it on its own)."""
    args = [*_http_args(url, host, "GET", headers, None, timeout), "--count", str(count)]
    if parallel:
        args.append("--parallel")
    if keep_alive:
        args.append("--keep-alive")
    out = ns.exec(*PYTHON, NETCLIENT, *args, timeout=(timeout if parallel else timeout * count) + 15)
    return [HttpResult.from_json(r) for r in json.loads(out)]


def _http_args(url: str, host: str | None, method: str, headers: dict[str, str] | None,
               unix: str | None, timeout: float, mode: str = "http") -> list[str]:
    args = [mode, "--url", url, "--method", method, "--timeout", str(timeout)]
    if host:
        args += ["--host", host]
    if unix:
        args += ["--unix", unix]
    for k, v in (headers or {}).items():
        args += ["--header", f"{k}: {v}"]
    return args


def tcp(ns: Netns, host: str, port: int, send: str = "ping", *, timeout: float = 5.0,
        tls: TlsClient | None = None, banner: bool = False) -> TcpResult:
    """Connect, send one line, return the one line the peer answers (our echo prefixes its pod).

    `tls`: inside TLS; `banner`: send nothing and return the first line a server-first peer sends.
    """
    out = ns.exec(*PYTHON, NETCLIENT, *_tcp_args(host, port, send, timeout, tls, banner),
                  timeout=timeout + 15)
    return _tcp_result(json.loads(out))


def tcp_many(ns: Netns, host: str, port: int, count: int, send: str = "ping", *,
             timeout: float = 5.0, tls: TlsClient | None = None) -> list[TcpResult]:
    """`count` connections one after another (each balanced or routed on its own), one line each."""
    args = [*_tcp_args(host, port, send, timeout, tls, False), "--count", str(count)]
    out = ns.exec(*PYTHON, NETCLIENT, *args, timeout=timeout * count + 15)
    return [_tcp_result(d) for d in json.loads(out)]


def _tcp_args(host: str, port: int, send: str, timeout: float, tls: TlsClient | None,
              banner: bool) -> list[str]:
    args = ["tcp", "--host", host, "--port", str(port), "--send", send, "--timeout", str(timeout)]
    if tls:
        args += ["--tls", *tls.args()]
    if banner:
        args.append("--banner")
    return args


def _tcp_result(data: dict[str, Any]) -> TcpResult:
    return TcpResult(data.get("reply", ""), data.get("error", ""), data.get("kind", ""))


def serve_http(ns: Netns, pod: str, port: int, bind: str = "0.0.0.0", status: int = 200) -> Proc:
    return ns.spawn(f"http-{bind}-{port}", [*PYTHON, APPSERVER, "http", "--pod", pod, "--bind", bind,
                                            "--port", str(port), "--status", str(status)],
                    ready_line="READY")


def serve_http_unix(ns: Netns, pod: str, path: Path) -> Proc:
    # Every parent must be traversable by uid 1337 (the Envoy connecting to it).
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    return ns.spawn(f"http-unix-{path.name}", [*PYTHON, APPSERVER, "http", "--pod", pod,
                                               "--unix", str(path)], ready_line="READY")


def serve_tcp_echo(ns: Netns, pod: str, port: int, bind: str = "0.0.0.0") -> Proc:
    return ns.spawn(f"echo-{bind}-{port}", [*PYTHON, APPSERVER, "tcp-echo", "--pod", pod, "--bind", bind,
                                            "--port", str(port)], ready_line="READY")


def serve_tcp(ns: Netns, pod: str, mode: str, port: int, bind: str = "0.0.0.0", *extra: str) -> Proc:
    """The other apps: `tls-echo` (extra: --cert/--key[/--ca]), `dual`, `banner`; `http` with
    --cert/--key (HTTPS)."""
    return ns.spawn(f"{mode}-{bind}-{port}", [*PYTHON, APPSERVER, mode, "--pod", pod, "--bind", bind,
                                              "--port", str(port), *extra], ready_line="READY")


def request_loop_argv(url: str, out: Path, *, host: str | None = None, interval: float = 0.05,
                      timeout: float = 2.0) -> list[str]:
    return [*PYTHON, NETCLIENT, *_http_args(url, host, "GET", None, None, timeout, mode="loop"),
            "--interval", str(interval), "--out", str(out)]
