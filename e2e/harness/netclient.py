"""Client run inside a pod (stdlib only; `python -I -S netclient.py MODE ...`); prints one JSON line.

http: {"status", "headers", "body", "elapsed"} or {"error", "kind", "elapsed"} (elapsed: seconds
      from connecting to the end of the response or the error); --count N makes N fresh
      connections and prints a list (load-balancing scenarios); with --parallel they are all in
      flight at once (connection-pool scenarios); with --keep-alive the N requests share one
      connection (a sidecar still routes each request on its own).
      https:// URLs use TLS (--sni, --ca to verify the server, --cert/--key to present a client
      certificate).
tcp:  connect, send one line, read one line back: {"reply"} or {"error", "kind"}; --tls wraps the
      connection (same TLS options); --banner sends nothing and returns the server's first line;
      --count N makes N connections one after another and prints a list.
loop: HTTP requests one after another (fresh connection each) until SIGTERM, one JSON line per
      request appended to --out: {"t", "status", "by", "kind"}; READY on stdout once started.
kind is one of refused | reset | timeout | closed | unreachable | tls | other, so tests can tell
"blocked by the sidecar" from "nothing listening" without parsing messages.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from typing import Any


def classify(e: BaseException) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(e, ssl.SSLError):
        return "tls"
    if isinstance(e, http.client.RemoteDisconnected | http.client.IncompleteRead | EOFError):
        return "closed"
    if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    return "other"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class TlsConnection(http.client.HTTPConnection):
    """HTTPS with our own context and SNI (which need not be the host we connect to)."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, sni: str) -> None:
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._sni = sni

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)


def tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.ca:
        ctx.load_verify_locations(args.ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key or None)
    return ctx


def connection(args: argparse.Namespace) -> http.client.HTTPConnection:
    url = urllib.parse.urlsplit(args.url)
    if args.unix:
        return UnixConnection(args.unix, args.timeout)
    if url.scheme == "https":
        return TlsConnection(url.hostname or "", url.port or 443, args.timeout, tls_context(args),
                             args.sni or url.hostname or "")
    return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)


def http_once(args: argparse.Namespace, kept: http.client.HTTPConnection | None = None) -> dict[str, Any]:
    """One request on a fresh connection, or on `kept` (left open for the next one unless it failed)."""
    url = urllib.parse.urlsplit(args.url)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    conn = kept or connection(args)
    failed = True
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if args.host:
        headers["Host"] = args.host
    start = time.monotonic()
    try:
        conn.request(args.method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        failed = False
        return {
            "status": resp.status,
            "headers": {k.lower(): v for k, v in resp.getheaders()},
            "body": body.decode(errors="replace"),
            "elapsed": time.monotonic() - start,
        }
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}", "kind": classify(e), "elapsed": time.monotonic() - start}
    finally:
        if kept is None or failed:
            conn.close()  # a kept connection that failed reconnects on its next request


def tcp_once(args: argparse.Namespace) -> dict[str, Any]:
    try:
        raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
        # wrap_socket takes the descriptor over: closing the wrapper closes the connection.
        with tls_context(args).wrap_socket(raw, server_hostname=args.sni or None) if args.tls else raw as s:
            if not args.banner:
                s.sendall(args.send.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        if not data:
            return {"error": "connection closed without reply", "kind": "closed"}
        return {"reply": data.decode(errors="replace").rstrip("\n")}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}", "kind": classify(e)}


def loop(args: argparse.Namespace) -> None:
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("READY", flush=True)
    with open(args.out, "a") as out:
        while not stop:
            r = http_once(args)
            out.write(json.dumps({"t": time.time(), "status": r.get("status"),
                                  "by": r.get("headers", {}).get("x-served-by"),
                                  "kind": r.get("kind", "")}) + "\n")
            out.flush()
            time.sleep(args.interval)  # request pacing, not synchronisation


def http_parallel(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`args.count` requests started together, each on its own connection; results in start order."""
    results: list[dict[str, Any]] = [{} for _ in range(args.count)]
    start = threading.Barrier(args.count)

    def one(i: int) -> None:
        start.wait()
        results[i] = http_once(args)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def add_tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sni", default="")
    p.add_argument("--ca", default="")
    p.add_argument("--cert", default="")
    p.add_argument("--key", default="")


def add_http_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True)
    p.add_argument("--host", default="")
    p.add_argument("--method", default="GET")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--unix", default="")
    p.add_argument("--timeout", type=float, default=5.0)
    add_tls_args(p)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("http")
    add_http_args(h)
    h.add_argument("--count", type=int, default=0)
    h.add_argument("--keep-alive", action="store_true")
    h.add_argument("--parallel", action="store_true")
    t = sub.add_parser("tcp")
    t.add_argument("--host", required=True)
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--send", default="ping")
    t.add_argument("--timeout", type=float, default=5.0)
    t.add_argument("--tls", action="store_true")
    t.add_argument("--banner", action="store_true")
    t.add_argument("--count", type=int, default=0)
    add_tls_args(t)
    lp = sub.add_parser("loop")
    add_http_args(lp)
    lp.add_argument("--interval", type=float, default=0.05)
    lp.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.mode == "loop":
        loop(args)
        return
    out: Any
    if args.mode == "http" and args.count and args.parallel:
        out = http_parallel(args)
    elif args.mode == "http":
        kept = connection(args) if args.keep_alive else None
        out = [http_once(args, kept) for _ in range(args.count)] if args.count else http_once(args)
    else:
        out = [tcp_once(args) for _ in range(args.count)] if args.count else tcp_once(args)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
