"""parse(doc, where) -> (object | None, problems): the one entry point from raw manifests.

(Being written: see issue 3. The signature is fixed.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xds_server.model import ConfigObject, Problem


def parse(doc: Mapping[str, Any], where: str = "") -> tuple[ConfigObject | None, list[Problem]]:
    raise NotImplementedError
