"""Validation entry points: per-object rules, cross-object warnings, unsupported fields.

`parse()` calls `validate()` on every Istio object, so sources and `xds-server validate` agree.
The rules themselves live in validate_sidecar.py, validate_service_entry.py,
validate_virtual_service.py and validate_destination_rule.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from google.protobuf.message import Message

from xds_server.config import (
    ConfigObject,
    IstioDestinationRule,
    IstioServiceEntry,
    IstioSidecar,
    IstioVirtualService,
    Kind,
    ObjectRef,
    Problem,
)
from xds_server.config.sidecar_inbound_tls import validate_inbound_tls
from xds_server.config.validate_destination_rule import validate_destination_rule
from xds_server.config.validate_fields import Report
from xds_server.config.validate_service_entry import validate_service_entry
from xds_server.config.validate_sidecar import validate_sidecar
from xds_server.config.validate_virtual_service import validate_virtual_service

# Fields that parse and validate but that xds-server does not act on. The server logs each one
# once per object; `validate` prints them as warnings. Keep this the one list to edit when the
# translator learns a field. Paths use Istio's names; `[]` means "any element".
UNSUPPORTED_FIELDS: dict[str, dict[str, str]] = {
    Kind.SIDECAR: {},
    Kind.SERVICE_ENTRY: {
        "spec.subjectAltNames": "as mesh mTLS identities: xds-server does not originate Istio mTLS; a "
                                "DestinationRule's SIMPLE or MUTUAL TLS that names no subjectAltNames checks them",
        "spec.endpoints[].network": "multi-network routing is not implemented",
        "spec.endpoints[].serviceAccount": "workload identity (mTLS) is not implemented",
    },
}


def validate(obj: ConfigObject, where: str = "") -> list[Problem]:
    """Istio's validation rules for one object (errors reject it; warnings do not)."""
    report = Report(where, obj.ref)
    if isinstance(obj, IstioSidecar):
        validate_sidecar(obj.spec, obj.meta.namespace, report)
    elif isinstance(obj, IstioServiceEntry):
        validate_service_entry(obj.spec, obj.meta.namespace, report)
    elif isinstance(obj, IstioVirtualService):
        validate_virtual_service(obj.spec, obj.meta.namespace, report)
    elif isinstance(obj, IstioDestinationRule):
        validate_destination_rule(obj.spec, obj.meta.namespace, report)
    if isinstance(obj, IstioSidecar):
        validate_inbound_tls(obj.spec, report)
    return report.problems


def duplicate_sidecar_warnings(
    objects: Iterable[ConfigObject], where: Mapping[ObjectRef, str] | None = None
) -> list[Problem]:
    """One warning per selector-less Sidecar that loses to an older one in its namespace.

    Istio keeps the oldest (creationTimestamp, then name) and ignores the rest.
    """
    latest = {obj.ref: obj for obj in objects}  # the same ref twice is one object, not two
    by_namespace: dict[str, list[IstioSidecar]] = defaultdict(list)
    for obj in latest.values():
        if isinstance(obj, IstioSidecar) and not obj.spec.HasField("workload_selector"):
            by_namespace[obj.meta.namespace].append(obj)
    out: list[Problem] = []
    for namespace in sorted(by_namespace):
        ordered = sorted(by_namespace[namespace], key=lambda s: (s.meta.creation_timestamp, s.meta.name))
        winner = ordered[0]
        for loser in ordered[1:]:
            out.append(
                Problem(
                    loser.ref,
                    f"spec.workloadSelector: not set, and {winner.ref} (older) already applies to namespace "
                    f"{namespace}; this Sidecar is ignored",
                    (where or {}).get(loser.ref, ""),
                    warning=True,
                )
            )
    return out


def unsupported_fields(obj: ConfigObject) -> list[str]:
    """The UNSUPPORTED_FIELDS paths that are set on obj (for logging once)."""
    fields = UNSUPPORTED_FIELDS.get(obj.kind, {})
    spec = getattr(obj, "spec", None)
    if not fields or not isinstance(spec, Message):
        return []
    return [path for path in fields if _is_set(spec, path.removeprefix("spec.").split("."))]


def unsupported_field_warnings(obj: ConfigObject, where: str = "") -> list[Problem]:
    """`validate`'s warnings: each unsupported field set on the object."""
    fields = UNSUPPORTED_FIELDS.get(obj.kind, {})
    out = []
    for path in unsupported_fields(obj):
        message = f"{path}: accepted but not acted on by xds-server ({fields[path]})"
        out.append(Problem(obj.ref, message, where, warning=True))
    return out


def _is_set(msg: Message, segments: list[str]) -> bool:
    head, rest = segments[0], segments[1:]
    name = head.removesuffix("[]")
    field = next((f for f in msg.DESCRIPTOR.fields if name in (f.json_name, f.name)), None)
    if field is None:
        return False
    value = getattr(msg, field.name)
    if field.is_repeated:
        if not rest:
            return len(value) > 0
        return any(_is_set(item, rest) for item in value if isinstance(item, Message))
    if field.message_type is not None:
        return msg.HasField(field.name) and (not rest or _is_set(value, rest))
    return bool(value)
