"""Per stream and type: what was sent, what was ACKed, the last NACK (for syncz and CSDS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class SyncState(StrEnum):
    NOT_SENT = "NOT_SENT"
    SYNCED = "SYNCED"
    STALE = "STALE"
    ERROR = "ERROR"


@dataclass(slots=True)
class Nack:
    nonce: str
    version: str  # the version that was rejected
    error: str
    at: float


@dataclass(slots=True)
class TypeStatus:
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float = 0.0
    sent_count: int = 0  # resources in the last response
    acked_version: str = ""
    acked_nonce: str = ""
    acked_at: float = 0.0
    nack: Nack | None = None
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    # Delta: per-resource versions the client has (as far as we know); SotW: of the last response
    resource_versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def state(self) -> SyncState:
        if self.nack is not None:
            return SyncState.ERROR
        if not self.sent_nonce:
            return SyncState.NOT_SENT
        if self.acked_nonce == self.sent_nonce:
            return SyncState.SYNCED
        return SyncState.STALE

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "sent_version": self.sent_version,
            "sent_nonce": self.sent_nonce,
            "sent_at": self.sent_at,
            "sent_resources": self.sent_count,
            "acked_version": self.acked_version,
            "acked_nonce": self.acked_nonce,
            "acked_at": self.acked_at,
            "responses": self.responses,
            "acks": self.acks,
            "nacks": self.nacks,
            "last_error": None if self.nack is None else {
                "nonce": self.nack.nonce, "version": self.nack.version, "message": self.nack.error,
                "at": self.nack.at},
        }
