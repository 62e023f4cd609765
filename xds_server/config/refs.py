"""Object identity (ObjectRef), common metadata, and Problem: a rejection as a value."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FrozenDict(dict[str, str]):
    """A hashable, read-only dict for labels, annotations and selectors.

    Config objects are frozen and hashable by value so that they can key the translator's memo.
    """

    __slots__ = ("_hash",)

    def __hash__(self) -> int:  # type: ignore[override]
        try:
            return self._hash
        except AttributeError:
            self._hash: int = hash(frozenset(self.items()))
            return self._hash

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("FrozenDict is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]


EMPTY = FrozenDict()


class Kind(StrEnum):
    POD = "Pod"
    SERVICE = "Service"
    NAMESPACE = "Namespace"
    SIDECAR = "Sidecar"
    SERVICE_ENTRY = "ServiceEntry"
    VIRTUAL_SERVICE = "VirtualService"
    DESTINATION_RULE = "DestinationRule"
    MESH_CONFIG = "MeshConfig"


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """kind/namespace/name; cluster-scoped kinds have namespace ''."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    namespace: str = ""
    labels: FrozenDict = EMPTY
    annotations: FrozenDict = EMPTY
    # RFC 3339 string as the API server gives it; "" sorts first (treated as oldest).
    creation_timestamp: str = ""
    resource_version: str = ""
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem. Prints as `where: kind/ns/name: field: message`."""

    ref: ObjectRef | None
    message: str  # starts with the field path, e.g. "spec.egress[0].port.number: must be 1..65535"
    where: str = ""  # "file:doc-index", "kubernetes", ...
    warning: bool = False  # warnings are reported but do not reject the object

    def __str__(self) -> str:
        parts = [p for p in (self.where, str(self.ref) if self.ref else "", self.message) if p]
        return ": ".join(parts)
