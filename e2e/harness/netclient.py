"""Client run inside a pod (stdlib only; `python -I -S netclient.py MODE ...`); prints one JSON line.

http: {"status", "headers", "body"} or {"error", "kind"}; --count N makes N fresh connections and
      prints a list (load-balancing scenarios).
tcp:  connect, send one line, read one line back: {"reply"} or {"error", "kind"}.
kind is one of refused | reset | timeout | closed | unreachable | other, so tests can tell
"blocked by the sidecar" from "nothing listening" without parsing messages.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import socket
import sys
import urllib.parse
from typing import Any


def classify(e: BaseException) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError | BrokenPipeError):
        return "reset"
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


def http_once(args: argparse.Namespace) -> dict[str, Any]:
    url = urllib.parse.urlsplit(args.url)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    conn: http.client.HTTPConnection
    if args.unix:
        conn = UnixConnection(args.unix, args.timeout)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if args.host:
        headers["Host"] = args.host
    try:
        conn.request(args.method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return {
            "status": resp.status,
            "headers": {k.lower(): v for k, v in resp.getheaders()},
            "body": body.decode(errors="replace"),
        }
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}", "kind": classify(e)}
    finally:
        conn.close()


def tcp_once(args: argparse.Namespace) -> dict[str, Any]:
    try:
        with socket.create_connection((args.host, args.port), timeout=args.timeout) as s:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("http")
    h.add_argument("--url", required=True)
    h.add_argument("--host", default="")
    h.add_argument("--method", default="GET")
    h.add_argument("--header", action="append", default=[])
    h.add_argument("--unix", default="")
    h.add_argument("--timeout", type=float, default=5.0)
    h.add_argument("--count", type=int, default=0)
    t = sub.add_parser("tcp")
    t.add_argument("--host", required=True)
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--send", default="ping")
    t.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    if args.mode == "http":
        out: Any = [http_once(args) for _ in range(args.count)] if args.count else http_once(args)
    else:
        out = tcp_once(args)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
