"""One admin view over several worker processes (`serve --workers N`): metrics and debug JSON merged.

Metrics follow prometheus-client's multiprocess mode (prometheus_client/multiprocess.py):
counters and histograms are summed over the workers (a rate or a quantile over them is what a
dashboard wants), gauges keep one series per worker with a `worker` label (its default gauge
mode "all", which labels by pid; sum or max them in the query). Each worker keeps its own
registry and exposition, so the hot path is unchanged (no mmap'd files per observation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_SUMMED = frozenset({"counter", "histogram", "summary"})


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families

    def describe(self) -> Iterable[Metric]:
        return []


def merge_metrics(expositions: Sequence[str]) -> bytes:
    """The workers' /metrics texts (index = worker) as one exposition."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for worker, text in enumerate(expositions):
        for family in text_string_to_metric_families(text):
            out = merged.get(family.name)
            if out is None:
                out = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            samples = values[family.name]
            summed = family.type in _SUMMED
            for s in family.samples:
                labels = dict(s.labels)
                if not summed:
                    labels["worker"] = str(worker)
                key = (s.name, tuple(sorted(labels.items())))
                samples[key] = samples.get(key, 0.0) + s.value if summed else s.value
    for name, out in merged.items():
        for (sample_name, label_items), value in values[name].items():
            out.add_sample(sample_name, dict(label_items), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(merged.values())))
    return generate_latest(registry)


def merge_syncz(views: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """/debug/syncz of every worker: one list of proxies, each with the worker serving it."""
    proxies = [{**p, "worker": w} for w, view in enumerate(views) for p in view.get("proxies", [])]
    proxies.sort(key=lambda p: (p.get("proxy", ""), p.get("connection_id", "")))
    return {"proxies": proxies}


def merge_adsz(views: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """/debug/adsz of every worker: one list of connections, each with the worker holding it."""
    conns = [{**c, "worker": w} for w, view in enumerate(views) for c in view.get("connections", [])]
    conns.sort(key=lambda c: (c.get("proxy", ""), c.get("connection_id", "")))
    return {"total": len(conns), "connections": conns}
