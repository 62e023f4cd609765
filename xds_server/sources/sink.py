"""ConfigSink: what a source may do to the store (the Store implements it; sources never import the store)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from xds_server.config import ConfigObject, ObjectRef, Problem


class ConfigSink(Protocol):
    """What a source may do. All calls happen on the event loop thread."""

    def replace(self, origin: str, objects: Iterable[ConfigObject]) -> None: ...
    def upsert(self, origin: str, obj: ConfigObject) -> None: ...
    def delete(self, origin: str, ref: ObjectRef) -> None: ...
    def report(self, origin: str, problems: Sequence[Problem]) -> None: ...
    def mark_synced(self, source: str) -> None: ...
