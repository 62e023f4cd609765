"""What the xds stage needs to know of the proxy at the other end of a stream.

The mesh model's Proxy (mesh/proxy.py) is one; the xds stage names no other stage's types, so it
states here what it reads: the key its snapshot is cached under, and what its logs, debug views,
CSDS node matching and mTLS scoping show or compare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar


class XdsProxy(Protocol):
    @property
    def key(self) -> str:
        """What the snapshot cache is keyed by: streams of one proxy share one snapshot."""

    @property
    def node_id(self) -> str:
        """The node.id it connected with."""

    @property
    def namespace(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, str]:
        """The node's string-valued metadata (CSDS node matchers, debug views)."""


P = TypeVar("P", bound=XdsProxy)  # the push side's own proxy type, carried through the xds stage unchanged
