"""Manifest dict -> protobuf message, reporting every bad field by its path.

`json_format.ParseDict` stops at the first error and words its path differently per case, so the
descriptor is walked here instead: `spec.egress[0].port.numbr: unknown field`. Field names are
Istio's JSON (camelCase) names; proto names are accepted too, as protojson does. `null` means
unset (as the API server prunes it). Types are strict the way a CRD schema is: a string is not an
integer, an enum is its name, bytes are base64 text (as in protojson). Durations take Go syntax
(`30ms`, `1m30s`) as Istio's do.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from xds_server.config.validate_fields import Report, type_name

M = TypeVar("M", bound=Message)

_F = FieldDescriptor
_RANGES = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
_DURATION = "google.protobuf.Duration"
_GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "μs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_MAX_DURATION_S = 315_576_000_000  # google.protobuf.Duration's range


class _Invalid(Exception):
    """A value that cannot be stored; the message names what is wrong."""


def parse_duration_ns(text: str) -> int | None:
    """Go's time.ParseDuration (`1h2m3.5s`, `-30ms`, `0`) in nanoseconds; None if malformed."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    if body.startswith(("-", "+")):
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        return None
    total, pos = Decimal(0), 0
    for match in _GO_DURATION.finditer(body):
        if match.start() != pos:
            return None
        pos = match.end()
        try:
            total += Decimal(match.group(1)) * _UNIT_NS[match.group(2)]
        except InvalidOperation:
            return None
    if pos != len(body):
        return None
    return sign * int(total)


def message_from_dict(data: Any, cls: type[M], path: str, report: Report) -> M | None:
    """A new `cls` filled from `data`, or None when any field is bad (each one reported)."""
    msg = cls()
    before = len(report.problems)
    _fill(msg, data, path, report)
    return None if len(report.problems) > before else msg


def _fill(msg: Message, data: Any, path: str, report: Report) -> None:
    if not isinstance(data, Mapping):
        report.error(path, f"expected an object, got {type_name(data)}")
        return
    by_name = _fields_by_name(cast(Descriptor, msg.DESCRIPTOR))  # the upb class has the same API
    for key, value in data.items():
        if not isinstance(key, str):
            report.error(path, f"field names must be strings, got {type_name(key)} {key!r}")
            continue
        here = f"{path}.{key}" if path else key
        field = by_name.get(key)
        if field is None:
            report.error(here, "unknown field")
            continue
        if value is None:
            continue
        try:
            _set_field(msg, field, value, here, report)
        except _Invalid as exc:
            report.error(here, str(exc))


_FIELDS: dict[str, dict[str, FieldDescriptor]] = {}


def _fields_by_name(desc: Descriptor) -> dict[str, FieldDescriptor]:
    """JSON and proto names of a message's fields (memoised: parse runs on every watch event)."""
    found = _FIELDS.get(desc.full_name)
    if found is None:
        found = {f.json_name: f for f in desc.fields} | {f.name: f for f in desc.fields}
        _FIELDS[desc.full_name] = found
    return found


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _set_field(msg: Message, field: FieldDescriptor, value: Any, here: str, report: Report) -> None:
    if _is_map(field):
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected an object, got {type_name(value)}")
        target = getattr(msg, field.name)
        entry = field.message_type
        assert entry is not None  # a map's entry message (_is_map)
        key_field = entry.fields_by_name["key"]
        value_field = entry.fields_by_name["value"]
        for k, v in value.items():
            entry_path = f"{here}[{k}]"
            if key_field.type == _F.TYPE_STRING and not isinstance(k, str):
                report.error(here, f"keys must be strings, got {type_name(k)} {k!r}")
                continue
            if v is None:
                report.error(entry_path, "null is not allowed as a map value")
                continue
            try:
                if value_field.message_type is not None:
                    _fill(target[k], v, entry_path, report)
                else:
                    target[k] = _scalar(value_field, v)
            except _Invalid as exc:
                report.error(entry_path, str(exc))
            except (ValueError, TypeError) as exc:
                report.error(entry_path, f"invalid value: {exc}")
        return
    if field.is_repeated:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list, got {type_name(value)}")
        target = getattr(msg, field.name)
        for i, item in enumerate(value):
            item_path = f"{here}[{i}]"
            if item is None:
                report.error(item_path, "null is not allowed in a list")
                continue
            try:
                if field.message_type is not None:
                    _set_message(target.add(), item, item_path, report)
                else:
                    target.append(_scalar(field, item))
            except _Invalid as exc:
                report.error(item_path, str(exc))
            except (ValueError, TypeError) as exc:
                report.error(item_path, f"invalid value: {exc}")
        return
    if field.message_type is not None:
        sub = getattr(msg, field.name)
        sub.SetInParent()  # `{}` is present, as in Go
        _set_message(sub, value, here, report)
        return
    try:
        setattr(msg, field.name, _scalar(field, value))
    except (ValueError, TypeError) as exc:
        raise _Invalid(f"invalid value: {exc}") from None


def _set_message(sub: Message, value: Any, here: str, report: Report) -> None:
    if sub.DESCRIPTOR.full_name == _DURATION:
        if not isinstance(value, str):
            raise _Invalid(f'expected a duration string such as "1s" or "30ms", got {type_name(value)}')
        ns = parse_duration_ns(value)
        if ns is None:
            raise _Invalid(f'invalid duration {value!r} (expected e.g. "1s", "30ms", "1m30s")')
        seconds, nanos = divmod(abs(ns), 10**9)
        if seconds > _MAX_DURATION_S:
            raise _Invalid(f"duration {value!r} is out of range")
        sign = -1 if ns < 0 else 1
        sub.seconds, sub.nanos = sign * seconds, sign * nanos  # type: ignore[attr-defined]
        return
    _fill(sub, value, here, report)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    kind = field.type
    if kind == _F.TYPE_STRING:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {type_name(value)}")
        return value
    if kind == _F.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _Invalid(f"expected a boolean, got {type_name(value)}")
        return value
    if kind == _F.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None  # every enum field has its type
        names = [v.name for v in enum.values]
        if not isinstance(value, str) or value not in enum.values_by_name:
            shown = repr(value) if isinstance(value, str) else type_name(value)
            raise _Invalid(f"unknown value {shown} (one of {', '.join(names)})")
        return enum.values_by_name[value].number
    if kind in _RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {type_name(value)}")
        low, high = _RANGES[kind]
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range {low}..{high}")
        return value
    if kind == _F.TYPE_BYTES:
        if not isinstance(value, str):
            raise _Invalid(f"expected base64 text, got {type_name(value)}")
        padded = value + "=" * (-len(value) % 4)
        url_safe = "-" in value or "_" in value  # protojson accepts both alphabets
        try:
            return base64.b64decode(padded, altchars=b"-_" if url_safe else None, validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid("invalid base64 text") from None
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number, got {type_name(value)}")
        return float(value)
    raise _Invalid(f"unsupported field type {kind}")
