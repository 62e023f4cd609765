"""Report: collects Problems for one object; typed readers for raw manifest values.

Every message starts with the field path (`spec.ports[0].port: ...`), so that a Problem prints as
`where: kind/ns/name: field: message`. The readers never raise: a value of the wrong type is
reported and read as None.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from xds_server.config.refs import ObjectRef, Problem


def type_name(value: Any) -> str:
    """How a YAML/JSON value is named in messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "number"
        case str():
            return "string"
        case Mapping():
            return "object"
        case list() | tuple():
            return "list"
        case _:
            return type(value).__name__


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Report:
    """The problems found in one document, all naming the same object."""

    def __init__(self, where: str, ref: ObjectRef | None = None) -> None:
        self.where = where
        self.ref = ref
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.ref, f"{path}: {message}" if path else message, self.where))

    def warn(self, path: str, message: str) -> None:
        text = f"{path}: {message}" if path else message
        self.problems.append(Problem(self.ref, text, self.where, warning=True))

    def check(self, path: str, error: str | None) -> bool:
        """Report `error` (from a validate_names function) if any; True when fine."""
        if error:
            self.error(path, error)
            return False
        return True

    @property
    def failed(self) -> bool:
        return any(not p.warning for p in self.problems)

    # ------------------------------------------------------------ typed readers
    def mapping(self, doc: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        """An optional object field; {} when absent, null or of the wrong type (reported)."""
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(join(path, key), f"expected an object, got {type_name(value)}")
            return {}
        return value

    def items(self, doc: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Any]]:
        """An optional list field as (item path, item); non-object items are reported and skipped."""
        value = doc.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(join(path, key), f"expected a list, got {type_name(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            item_path = f"{join(path, key)}[{i}]"
            if isinstance(item, Mapping):
                out.append((item_path, item))
            else:
                self.error(item_path, f"expected an object, got {type_name(item)}")
        return out

    def string(self, doc: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
        value = doc.get(key)
        if value is None:
            return default
        if isinstance(value, datetime.datetime | datetime.date):
            # YAML reads unquoted timestamps as datetimes; the API server's form is RFC 3339.
            text = value.isoformat()
            return text.replace("+00:00", "Z")
        if not isinstance(value, str):
            self.error(join(path, key), f"expected a string, got {type_name(value)}")
            return default
        return value

    def integer(self, doc: Mapping[str, Any], key: str, path: str) -> int | None:
        value = doc.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(join(path, key), f"expected an integer, got {type_name(value)}")
            return None
        return value

    def boolean(self, doc: Mapping[str, Any], key: str, path: str) -> bool:
        value = doc.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.error(join(path, key), f"expected a boolean, got {type_name(value)}")
            return False
        return value

    def string_map(self, doc: Mapping[str, Any], key: str, path: str) -> dict[str, str] | None:
        """A map of strings (labels, selector); None when absent."""
        value = doc.get(key)
        if value is None:
            return None
        here = join(path, key)
        if not isinstance(value, Mapping):
            self.error(here, f"expected an object, got {type_name(value)}")
            return None
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                self.error(here, f"keys must be strings, got {type_name(k)} {k!r}")
            elif not isinstance(v, str):
                self.error(f"{here}[{k}]", f"expected a string, got {type_name(v)}")
            else:
                out[k] = v
        return out

    def strings(self, doc: Mapping[str, Any], key: str, path: str) -> list[str]:
        value = doc.get(key)
        if value is None:
            return []
        here = join(path, key)
        if not isinstance(value, list):
            self.error(here, f"expected a list, got {type_name(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.error(f"{here}[{i}]", f"expected a string, got {type_name(item)}")
        return out


def describe_yaml_error(exc: Exception) -> str:
    """A one-line YAML error with 1-based line/column, without PyYAML's `in "<unicode string>"`."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if not problem:
        return " ".join(str(exc).split())
    text = f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else str(problem)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        where = f" (line {context_mark.line + 1}, column {context_mark.column + 1})" if context_mark else ""
        text += f" {context}{where}"
    return text
