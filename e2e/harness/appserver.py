"""Tiny apps run inside pods (stdlib only; started as `python -I -S appserver.py MODE ...`).

http:     answers every request with JSON {"pod", "host", "path", "method", "peer", "headers"},
          so a test sees which pod served it, what Host/path arrived and from which address
          (127.0.0.6 means "came through the inbound sidecar"). --status CODE answers every
          request with that status (a failing backend). --cert/--key: HTTPS, and the JSON also
          has "sni" (the server name the client sent, or null). A few paths behave like httpbin,
          for routing policies (timeouts, retries, faults, mirroring) to act on:
            /delay/<seconds>...          answers after that many seconds (httpbin's /delay/N)
            /fail/<code>/<n>/<key>...    the first n requests on that exact path answer <code>,
                                         later ones as usual (fails n times, then works)
          Every request is counted by path (query excluded); /_seen/<path> answers {"hits", "last"}
          (how many requests arrived for /<path>, the JSON of the last one) and counts nothing.
tcp-echo: line-based; replies "<pod> <line>" for every line received.
tls-echo: tcp-echo inside TLS (--cert/--key; --ca makes client certificates mandatory); replies
          "<pod> sni=<server name the client sent, or -> <line>", so a test sees where SNI routed it.
dual:     one port speaking both: a connection starting with an HTTP method gets the http app,
          anything else the tcp echo (a protocol-sniffed "auto" port).
banner:   server-first: sends "<pod> hello" on connect, then echoes like tcp-echo.
Modes bind TCP (--bind/--port) or a unix socket (--unix, made 0777 so uid-1337 Envoy can connect).
Prints READY on stdout once listening; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELAY_PATH = re.compile(r"^/delay/(\d+(?:\.\d+)?)(?:[/?]|$)")


class Seen:
    """Requests per path (query excluded) and the last one's JSON, shared by the server's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.last: dict[str, dict[str, object]] = {}

    def record(self, path: str, request: dict[str, object]) -> int:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            self.last[path] = request
            return self.hits[path]

    def report(self, path: str) -> dict[str, object]:
        with self.lock:
            return {"hits": self.hits.get(path, 0), "last": self.last.get(path)}


FAIL_PATH = re.compile(r"^/fail/(?P<code>\d{3})/(?P<n>\d+)/")


def http_handler(pod: str, status: int = 200) -> type[BaseHTTPRequestHandler]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream connections expect

        def setup(self) -> None:
            super().setup()
            # Headers and body are two writes: with Nagle the body waits for the peer's delayed
            # ACK (~40 ms a request on a kept-alive connection). Not for unix sockets.
            if isinstance(self.client_address, tuple) and self.client_address[0] != "unix":
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            delay = DELAY_PATH.match(self.path)
            if delay:
                time.sleep(float(delay.group(1)))  # the slowness is the behaviour under test
            peer = self.client_address[0] if isinstance(self.client_address, tuple) else "unix"
            tls = {"sni": getattr(self.request, "e2e_sni", None)} if isinstance(self.request, ssl.SSLSocket) else {}
            request = {
                **tls,
                "pod": pod,
                "host": self.headers.get("host", ""),
                "path": self.path,
                "method": self.command,
                "peer": peer,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
            path = self.path.split("?", 1)[0]
            code = status
            if path.startswith("/_seen/"):
                body = json.dumps(seen.report(path.removeprefix("/_seen"))).encode()
            else:
                hits = seen.record(path, request)
                m = FAIL_PATH.match(path)
                if m and hits <= int(m["n"]):
                    code = int(m["code"])
                body = json.dumps(request).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-served-by", pod)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _answer

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"{self.command} {self.path} from {self.client_address}\n")

    return Handler


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):  # type: ignore[no-untyped-def]
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)  # BaseHTTPRequestHandler wants an address tuple


class TlsHTTPServer(ThreadingHTTPServer):
    """HTTPS: each accepted connection is wrapped, its handshake done in the handler's thread."""

    context: ssl.SSLContext

    def get_request(self):  # type: ignore[no-untyped-def]
        conn, addr = self.socket.accept()
        return self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr


class EchoHandler(socketserver.StreamRequestHandler):
    pod = ""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(f"{self.pod} ".encode() + line)
            self.wfile.flush()


class TlsEchoHandler(EchoHandler):
    context: ssl.SSLContext

    def setup(self) -> None:
        self.request = self.context.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self) -> None:
        sni = getattr(self.request, "e2e_sni", None) or "-"
        for line in self.rfile:
            self.wfile.write(f"{self.pod} sni={sni} ".encode() + line)
            self.wfile.flush()


HTTP_START = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PRI) ")


class DualHandler(socketserver.BaseRequestHandler):
    """HTTP or line echo on one port, decided by the first bytes (like Envoy's http_inspector)."""

    pod = ""

    def handle(self) -> None:
        head = self.request.recv(8, socket.MSG_PEEK)
        if HTTP_START.match(head):
            http_handler(self.pod)(self.request, self.client_address, self.server)
        else:
            type("Echo", (EchoHandler,), {"pod": self.pod})(self.request, self.client_address, self.server)


class BannerHandler(EchoHandler):
    def handle(self) -> None:
        self.wfile.write(f"{self.pod} hello\n".encode())
        self.wfile.flush()
        super().handle()


class ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def server_tls_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    # The server name the client asked for, kept on its socket for the reply.
    ctx.sni_callback = lambda sock, name, _ctx: setattr(sock, "e2e_sni", name)  # type: ignore[assignment]
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("http", "tcp-echo", "tls-echo", "dual", "banner"))
    parser.add_argument("--pod", required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix", default="")
    parser.add_argument("--cert", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--ca", default="")
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args()

    server: socketserver.BaseServer
    if args.mode == "http":
        handler = http_handler(args.pod, args.status)
        if args.unix:
            if os.path.exists(args.unix):
                os.unlink(args.unix)
            server = UnixHTTPServer(args.unix, handler)
            os.chmod(args.unix, 0o777)
        elif args.cert:
            server = TlsHTTPServer((args.bind, args.port), handler)
            server.context = server_tls_context(args.cert, args.key, args.ca)
        else:
            server = ThreadingHTTPServer((args.bind, args.port), handler)
    else:
        handlers: dict[str, type[socketserver.BaseRequestHandler]] = {
            "tcp-echo": EchoHandler, "tls-echo": TlsEchoHandler, "dual": DualHandler, "banner": BannerHandler}
        handler_cls = type("Handler", (handlers[args.mode],), {"pod": args.pod})
        if args.mode == "tls-echo":
            handler_cls.context = server_tls_context(args.cert, args.key, args.ca)  # type: ignore[attr-defined]
        server = ThreadingTCP((args.bind, args.port), handler_cls)
    if isinstance(server, socketserver.TCPServer):
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    print("READY", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
