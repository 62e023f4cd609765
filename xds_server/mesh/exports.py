"""exportTo as istiod reads it for VirtualServices and DestinationRules (pilot/pkg/model/push_context.go).

`*` is public, `.` the object's own namespace, `~` nobody, any other value a namespace. An empty
exportTo takes the MeshConfig default (`defaultVirtualServiceExportTo`,
`defaultDestinationRuleExportTo`), of which istiod honours only `.` and `*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PUBLIC = "*"
PRIVATE = "."
NONE = "~"


@dataclass(frozen=True, slots=True)
class ExportTo:
    """Where an object is visible: everywhere (`public`), or the namespaces in `namespaces`."""

    public: bool
    namespaces: frozenset[str]
    explicit: bool  # exportTo was written on the object (not the mesh default)

    def visible_in(self, namespace: str) -> bool:
        return self.public or namespace in self.namespaces

    @property
    def private_to(self) -> str | None:
        """The one namespace it is visible in, when that is all."""
        if self.public or len(self.namespaces) != 1:
            return None
        return next(iter(self.namespaces))


def resolve_export_to(values: Sequence[str], namespace: str, mesh_default: Sequence[str]) -> ExportTo:
    """`values` of an object in `namespace`; `mesh_default` when empty (only `.` and `*` honoured)."""
    if not values:
        if PRIVATE in mesh_default:
            return ExportTo(False, frozenset({namespace}), False)
        return ExportTo(PUBLIC in mesh_default, frozenset(), False)
    if PUBLIC in values:
        return ExportTo(True, frozenset(), True)
    if NONE in values:
        return ExportTo(False, frozenset(), True)
    return ExportTo(False, frozenset(namespace if v == PRIVATE else v for v in values), True)
