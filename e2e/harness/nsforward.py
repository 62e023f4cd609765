"""TCP forwarder from a port inside a namespace to an address in another namespace (stdlib only).

The kube-apiserver of the kind-like e2e listens on the host's loopback, where a server started
inside the node namespace cannot reach it; this process runs in the node namespace, listens
there, and opens each upstream socket inside the host namespace (setns(2) around socket(2): a
socket belongs to the namespace it was created in), so TLS passes through untouched and the
certificate's 127.0.0.1 still matches. Prints READY once listening.

    python nsforward.py --listen 127.0.0.1:6443 --to 127.0.0.1:PORT --to-netns /proc/PID/ns/net
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen: tuple[str, int], target: tuple[str, int], target_ns: int, own_ns: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        setns(target_ns)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            setns(own_ns)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, target)
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, *listen)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=_addr, required=True)
    p.add_argument("--to", type=_addr, required=True)
    p.add_argument("--to-netns", required=True, help="a network namespace file, e.g. /proc/PID/ns/net")
    a = p.parse_args()
    target_fd = os.open(a.to_netns, os.O_RDONLY)
    own_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        asyncio.run(main(a.listen, a.to, target_fd, own_fd))
    except KeyboardInterrupt:
        sys.exit(0)
