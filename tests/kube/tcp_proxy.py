"""A loopback TCP relay in front of the real apiserver, to cut a client's connections on demand.

The apiserver cannot be asked to drop one client's watch, and restarting it costs seconds and
drops everyone's. The relay forwards bytes untouched (TLS included: the serving certificate is
for 127.0.0.1, where the relay listens too), and `drop()` closes every relayed connection at once;
while `refusing`, new connections are closed as soon as they are accepted, so a client cannot
reconnect until the test lets it.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpRelay:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._refusing = False
        self._closed = False
        self.accepted = 0  # connections accepted and relayed (a reconnect counts)
        self._thread = threading.Thread(target=self._accept, name="tcp-relay", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def drop(self) -> int:
        """Close every relayed connection (both sides); returns how many client connections."""
        with self._lock:
            sockets, self._open = self._open, set()
        for s in sockets:
            _close(s)
        return len(sockets) // 2

    def refuse(self, refusing: bool = True) -> None:
        with self._lock:
            self._refusing = refusing

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.drop()
        self._thread.join(5)

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                _close(client)
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open |= {client, server}
                self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), name="tcp-relay-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
