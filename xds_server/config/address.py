"""Addresses as written in config and on the command line: host:port, unix sockets, endpoints.

The one host:port splitter of the code base (`split_host_port`, Go's `net.SplitHostPort`), and
a Sidecar ingress listener's `defaultEndpoint` parsed once into an `Endpoint` with its kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

UNIX_PREFIX = "unix://"


def is_unix(address: str) -> bool:
    """`unix:///path` or `unix://@abstract`, the form Istio's `bind` and `defaultEndpoint` take."""
    return address.startswith(UNIX_PREFIX)


def unix_path(address: str) -> str:
    """The socket path of a `unix://` address (`/path` or `@abstract`)."""
    return address[len(UNIX_PREFIX):]


def split_host_port(value: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: `host:port` or `[v6]:port`; None when malformed."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":" or "[" in value[1:end]:
            return None
        return value[1:end], value[end + 2 :]
    host, sep, port = value.rpartition(":")
    if not sep or ":" in host or "[" in host or "]" in host:
        return None
    return host, port


def port_number(text: str) -> int | None:
    """A port written in decimal digits, 0..65535; None otherwise."""
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= 65535 else None


def host_port(value: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `[v6]:port` with a numeric port; None when malformed."""
    parts = split_host_port(value)
    if parts is None:
        return None
    number = port_number(parts[1])
    return None if number is None else (parts[0], number)


class EndpointKind(StrEnum):
    ORIGINAL_DST = "original_dst"  # unset: back to the address the client dialled
    UNIX = "unix"  # unix:///path or unix://@abstract
    HOST_PORT = "host_port"  # 127.0.0.1:P, [::1]:P, 0.0.0.0:P, [::]:P (any host parses; see translate)
    INVALID = "invalid"  # not parseable: validation rejects it, istiod builds no cluster


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A Sidecar ingress listener's `defaultEndpoint`, parsed once (istio `IstioIngressListener`)."""

    kind: EndpointKind
    host: str = ""  # HOST_PORT only
    port: int = 0  # HOST_PORT only
    address: str = ""  # as written (UNIX: the whole `unix://...`, which Envoy addresses name as a pipe)

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        if not text:
            return ORIGINAL_DST_ENDPOINT
        if is_unix(text):
            return cls(EndpointKind.UNIX, address=text)
        found = host_port(text)
        if found is None:
            return cls(EndpointKind.INVALID, address=text)
        return cls(EndpointKind.HOST_PORT, host=found[0], port=found[1], address=text)


ORIGINAL_DST_ENDPOINT = Endpoint(EndpointKind.ORIGINAL_DST)
