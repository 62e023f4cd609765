"""LoopHistogram (metrics on the hot path) exports exactly what prometheus-client's Histogram does."""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Histogram

from xds_server.admin.metrics import LATENCY_BUCKETS, LoopHistogram

VALUES = (0.0, 0.001, 0.0011, 0.3, 0.5, 1, 29.9, 30, 31, 1e9, 0.05, 0.05)


def test_same_exposition_as_a_prometheus_histogram() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("h", "doc", buckets=LATENCY_BUCKETS, registry=theirs)
    typed = Histogram("t", "doc", ["type"], buckets=(1, 10), registry=theirs)
    fast = LoopHistogram("h", "doc", LATENCY_BUCKETS)
    fast_typed = LoopHistogram("t", "doc", (1, 10), ("type",))
    ours.register(fast)  # type: ignore[arg-type]
    ours.register(fast_typed)  # type: ignore[arg-type]
    for v in VALUES:
        plain.observe(v)
        fast.observe(v)
        for t in ("cds", "eds"):
            typed.labels(t).observe(v * 3)
            fast_typed.labels(t).observe(v * 3)
    prometheus_client.disable_created_metrics()
    assert prometheus_client.generate_latest(ours) == prometheus_client.generate_latest(theirs)
