"""Small builders for model tests: YAML text in, parse() result out."""

from __future__ import annotations

from typing import Any

import yaml

from xds_server.config import ConfigObject, Problem
from xds_server.config.parse import parse


def doc(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


def parse_yaml(text: str, where: str = "t.yaml:0") -> tuple[ConfigObject | None, list[Problem]]:
    return parse(doc(text), where)


def istio(
    kind: str, spec: Any, name: str = "x", namespace: str = "ns", version: str = "v1"
) -> dict[str, Any]:
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def messages(problems: list[Problem], warnings: bool = False) -> list[str]:
    """The messages of the errors (or of the warnings)."""
    return [p.message for p in problems if p.warning == warnings]


def errors_of(kind: str, spec: Any) -> list[str]:
    _, problems = parse(istio(kind, spec))
    return messages(problems)


def warnings_of(kind: str, spec: Any) -> list[str]:
    _, problems = parse(istio(kind, spec))
    return messages(problems, warnings=True)
