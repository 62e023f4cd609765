"""The Kubernetes source against the API-server double (tests/fixtures/kube_apiserver.py): only
what a real kube-apiserver cannot be made to do. Everything else runs against the real one, in
tests/kube/test_kube_source.py.

Kept here, and why:
- the exact requests the client makes (bookmarks asked for, the watch resuming from the list's
  resourceVersion): the real server does not tell a test what a client asked;
- a 410 answered as the HTTP status of the watch request rather than as an ERROR event in the
  stream: kube-apiserver v1.36 answers an expired resourceVersion with the event, but the
  protocol allows both (client-go handles both) and proxies in front of a server may do the former;
- 500s on chosen requests, to time the backoff between retries: a real server cannot be made to
  fail one kind's list on demand.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.kube_apiserver import FakeApiServer
from tests.kube.source_harness import eventually, namespace, pod, running, service, service_entry, sidecar
from xds_server.sources.kubernetes import KubeConfigError, KubernetesSource
from xds_server.store.store import Store


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> Path:
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


async def test_watches_ask_for_bookmarks_from_the_lists_resource_version(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    for doc in (pod("web"), service("web", cluster_ip="10.96.0.10"), namespace("default"), sidecar("default"),
                service_entry("ext")):  # fmt: skip
        apiserver.apply(doc)
    listed_at = str(apiserver.resource_version)
    async with running(kubeconfig) as r:
        assert r.names("Pod") == {"Pod/default/web"}
        for plural in ("pods", "services", "namespaces", "sidecars", "serviceentries"):
            # Ready means listed: each watch follows its list at once, but maybe not yet.
            await eventually(lambda plural=plural: apiserver.requests_for(plural, watch=True), f"{plural} watched")
            watch = apiserver.requests_for(plural, watch=True)[0]
            assert watch.query["allowWatchBookmarks"] == "true"
            assert watch.query["resourceVersion"] == listed_at
        assert all(q.query.get("fieldSelector") == "metadata.name=istio" for q in apiserver.requests_for("configmaps"))


async def test_a_410_http_status_on_the_watch_relists(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    apiserver.gone_as_http = True
    apiserver.apply(pod("stays"))
    apiserver.apply(pod("goes"))
    async with running(kubeconfig) as r:
        assert r.names("Pod") == {"Pod/default/stays", "Pod/default/goes"}
        # Keep the pods reflector away while things change and the history is compacted.
        apiserver.fail_next("pods", 503, count=10**6, verb="watch")
        apiserver.drop_watches("pods")
        failed = len(apiserver.requests_for("pods", watch=True))
        await eventually(lambda: len(apiserver.requests_for("pods", watch=True)) > failed, "a refused watch")
        apiserver.delete("Pod", "default", "goes")
        apiserver.apply(pod("new"))
        apiserver.compact()
        apiserver.clear_failures()
        await eventually(lambda: r.names("Pod") == {"Pod/default/stays", "Pod/default/new"}, "relist")
        assert len(apiserver.requests_for("pods", watch=False)) == 2


async def test_errors_are_retried_with_growing_backoff(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    base = 0.05
    apiserver.fail_next("pods", 500, count=4, verb="list")
    async with running(kubeconfig, wait_synced=False, backoff_base=base, backoff_max=10) as r:
        await eventually(lambda: r.store.synced("kubernetes"), "sync after the failures")
        times = [q.at for q in apiserver.requests_for("pods", watch=False)]
        assert len(times) == 5
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Jitter scales each wait into [half, whole] of base * 2^n: check the lower bounds only.
        assert all(gap >= base * 2**n / 2 * 0.9 for n, gap in enumerate(gaps)), gaps


async def test_bad_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    source = KubernetesSource(tmp_path / "missing")
    with pytest.raises(KubeConfigError, match="missing"):
        await source.run(Store(), asyncio.Event())
