"""A tiny authoritative DNS server for the node namespace (stdlib asyncio UDP).

`python -I -S dnsserver.py --bind IP --port 53 --records FILE`: FILE is JSON {"name": ["ip", ...]},
re-read whenever its mtime changes, so a test changes answers by rewriting it. A queries for a
known name get its addresses (TTL 1 s, so Envoy's DNS clusters pick changes up quickly); other
query types for a known name get an empty NOERROR (Envoy falls back from AAAA to A); unknown names
get NXDOMAIN. Prints READY once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys

TYPE_A = 1
TTL = 1


class Records:
    def __init__(self, path: str) -> None:
        self.path = path
        self.mtime = -1.0
        self.table: dict[str, list[str]] = {}

    def lookup(self, name: str) -> list[str] | None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime != self.mtime:
            with open(self.path) as f:
                self.table = {k.lower().rstrip("."): v for k, v in json.load(f).items()}
            self.mtime = mtime
        return self.table.get(name.lower().rstrip("."))


def parse_question(data: bytes) -> tuple[int, int, str, int, int] | None:
    """(id, flags, qname, qtype, end offset of the question) or None if malformed."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1:
        return None
    labels, pos = [], 12
    while pos < len(data):
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            return None  # no compression in questions from stub resolvers
        labels.append(data[pos : pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(data):
        return None
    qtype = struct.unpack("!H", data[pos : pos + 2])[0]
    return qid, flags, ".".join(labels), qtype, pos + 4


def answer(data: bytes, records: Records) -> bytes | None:
    parsed = parse_question(data)
    if parsed is None:
        return None
    qid, flags, name, qtype, end = parsed
    ips = records.lookup(name)
    rd = flags & 0x0100
    rcode = 3 if ips is None else 0  # NXDOMAIN for unknown names
    answers = [ip for ip in (ips or []) if qtype == TYPE_A]
    header = struct.pack("!HHHHHH", qid, 0x8400 | 0x0080 | rd | rcode, 1, len(answers), 0, 0)
    body = data[12:end]
    for ip in answers:
        # 0xC00C: pointer to the name in the question.
        body += struct.pack("!HHHIH", 0xC00C, TYPE_A, 1, TTL, 4) + socket.inet_aton(ip)
    return header + body


class Protocol(asyncio.DatagramProtocol):
    def __init__(self, records: Records) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = answer(data, self.records)
        except Exception as e:  # a bad packet must not kill the server
            print(f"error answering {addr}: {e}", file=sys.stderr)
            return
        if reply and self.transport:
            self.transport.sendto(reply, addr)


async def serve(bind: str, port: int, path: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Protocol(Records(path)), local_addr=(bind, port))
    print("READY", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--records", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.bind, args.port, args.records))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
