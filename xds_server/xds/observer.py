"""Hooks the stream machines call as things happen (metrics and logs plug in here).

Plain synchronous calls: the machines stay free of I/O and clocks of their own.
"""

from __future__ import annotations

from typing import Protocol

from xds_server.xds.status import Nack


class StreamObserver(Protocol):
    def request(self, type_url: str) -> None: ...
    def ack(self, type_url: str) -> None: ...
    def nack(self, type_url: str, nack: Nack) -> None: ...
    def stale_nonce(self, type_url: str) -> None: ...
    def unknown_type(self, type_url: str) -> None: ...


class NullObserver:
    def request(self, type_url: str) -> None:
        pass

    def ack(self, type_url: str) -> None:
        pass

    def nack(self, type_url: str, nack: Nack) -> None:
        pass

    def stale_nonce(self, type_url: str) -> None:
        pass

    def unknown_type(self, type_url: str) -> None:
        pass


class ServerObserver(Protocol):
    """Connection-level hooks (metrics, logs). `connection` is an xds.services.Connection."""

    def stream_observer(self, connection: object) -> StreamObserver: ...
    def connected(self, connection: object) -> None: ...
    def disconnected(self, connection: object) -> None: ...
    def sent(self, connection: object, type_url: str, resources: int, size: int, seconds: float) -> None: ...
    def write_timeout(self, connection: object) -> None: ...
    def refused(self, code: str, reason: str) -> None: ...
    def stream_error(self, code: str, reason: str) -> None: ...
    def received(self, size: int) -> None: ...


class NullServerObserver:
    def stream_observer(self, connection: object) -> StreamObserver:
        return NullObserver()

    def connected(self, connection: object) -> None:
        pass

    def disconnected(self, connection: object) -> None:
        pass

    def sent(self, connection: object, type_url: str, resources: int, size: int, seconds: float) -> None:
        pass

    def write_timeout(self, connection: object) -> None:
        pass

    def refused(self, code: str, reason: str) -> None:
        pass

    def stream_error(self, code: str, reason: str) -> None:
        pass

    def received(self, size: int) -> None:
        pass
