"""Read a running App's admin HTTP endpoints and Prometheus text in tests."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def admin_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text()


async def admin_json(port: int, path: str, status: int = 200) -> Any:
    code, body = await admin_get(port, path)
    assert code == status, f"{path}: HTTP {code}: {body[:500]}"
    return json.loads(body)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as a counter that never moved)."""
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def metric(port: int, name: str, **labels: str) -> float:
    code, text = await admin_get(port, "/metrics")
    assert code == 200
    return value(text, name, **labels)
