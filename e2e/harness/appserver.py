"""Tiny apps run inside pods (stdlib only; started as `python -I -S appserver.py MODE ...`).

http:     answers every request with JSON {"pod", "host", "path", "method", "peer", "headers"},
          so a test sees which pod served it, what Host/path arrived and from which address
          (127.0.0.6 means "came through the inbound sidecar").
tcp-echo: line-based; replies "<pod> <line>" for every line received.
Modes bind TCP (--bind/--port) or a unix socket (--unix, made 0777 so uid-1337 Envoy can connect).
Prints READY on stdout once listening; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def http_handler(pod: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream connections expect

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            peer = self.client_address[0] if isinstance(self.client_address, tuple) else "unix"
            body = json.dumps({
                "pod": pod,
                "host": self.headers.get("host", ""),
                "path": self.path,
                "method": self.command,
                "peer": peer,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-served-by", pod)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"{self.command} {self.path} from {self.client_address}\n")

    return Handler


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):  # type: ignore[no-untyped-def]
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)  # BaseHTTPRequestHandler wants an address tuple


class EchoHandler(socketserver.StreamRequestHandler):
    pod = ""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(f"{self.pod} ".encode() + line)
            self.wfile.flush()


class ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("http", "tcp-echo"))
    parser.add_argument("--pod", required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix", default="")
    args = parser.parse_args()

    server: socketserver.BaseServer
    if args.mode == "http":
        handler = http_handler(args.pod)
        if args.unix:
            if os.path.exists(args.unix):
                os.unlink(args.unix)
            server = UnixHTTPServer(args.unix, handler)
            os.chmod(args.unix, 0o777)
        else:
            ThreadingHTTPServer.allow_reuse_address = True
            server = ThreadingHTTPServer((args.bind, args.port), handler)
    else:
        EchoHandler.pod = args.pod
        server = ThreadingTCP((args.bind, args.port), EchoHandler)
    if isinstance(server, socketserver.TCPServer):
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    print("READY", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
