"""Logging setup: text or JSON lines on stderr (`--log-format text|json`).

JSON lines carry `time`, `level`, `logger`, `msg`, and every field a caller passed with
`extra=` (a NACK adds proxy, node_id, connection_id, type, nonce, version and error), so they
can be filtered without parsing the message. What is logged at info: one line per xDS
connection open and close, start and stop; NACKs and config rejections are warnings; pushes
are debug only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _iso(created: float, msecs: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00.000Z WARNING xds_server.xds: message` (UTC, like the JSON lines)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created, record.msecs)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries stay quiet unless asked: their info lines are per-request noise.
    for name in ("kubernetes", "aiohttp.access", "urllib3"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
