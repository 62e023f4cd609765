"""The Kubernetes source with the official client, against the API-server double, into a real Store."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kube_apiserver import FakeApiServer
from xds_server.config import ObjectRef
from xds_server.sources.kubernetes import KubeConfigError, KubernetesSource
from xds_server.store.store import Store

DEADLINE = 10.0  # generous: every wait below polls and returns as soon as its condition holds


# ---------------------------------------------------------------- manifests
def pod(name: str, ns: str = "default", ip: str = "10.0.0.1", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": "True"}]},
    }


def service(name: str, ns: str = "default", **selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": selector or {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            "clusterIP": "10.96.0.10",
        },
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def sidecar(name: str, ns: str = "default", hosts: tuple[str, ...] = ("./*",)) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"egress": [{"hosts": list(hosts)}]},
    }


def bad_sidecar(name: str, ns: str = "default") -> dict[str, Any]:
    doc = sidecar(name, ns)
    doc["spec"] = {"egress": "not-a-list"}
    return doc


def service_entry(name: str, ns: str = "default", host: str = "api.example.com") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "hosts": [host],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
            "resolution": "DNS",
        },
    }


def mesh_configmap(mode: str = "REGISTRY_ONLY", ns: str = "istio-system") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": ns},
        "data": {"mesh": f"outboundTrafficPolicy:\n  mode: {mode}\n"},
    }


def ref(kind: str, name: str, ns: str = "default") -> ObjectRef:
    return ObjectRef(kind, ns, name)


# ---------------------------------------------------------------- harness
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


@dataclass
class Running:
    source: KubernetesSource
    store: Store
    task: asyncio.Task[None]

    def names(self, kind: str) -> set[str]:
        return {str(obj.ref) for _, obj in self.store.objects() if obj.ref.kind == kind}

    def rv(self, origin: str) -> str:
        return self.source.resource_versions[origin]


async def eventually(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


def reflector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("reflector ")]


@asynccontextmanager
async def running(kubeconfig: Path, *, wait_synced: bool = True, **options: Any) -> AsyncIterator[Running]:
    settings: dict[str, Any] = {"backoff_base": 0.02, "backoff_max": 0.2, "watch_timeout": 30}
    source = KubernetesSource(kubeconfig, **(settings | options))
    store = Store()
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(store, stop))
    try:
        if wait_synced:
            await eventually(lambda: store.synced("kubernetes") or task.done(), "initial sync")
            if task.done():
                task.result()
            assert source.synced
        yield Running(source, store, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE)
    assert not reflector_threads(), "reflector threads leaked"


# ---------------------------------------------------------------- sync and readiness
async def test_initial_sync_brings_every_kind_and_marks_the_source_ready(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    for doc in (pod("web"), service("web"), namespace("default"), sidecar("default"), service_entry("ext"),
                mesh_configmap()):  # fmt: skip
        apiserver.apply(doc)
    listed_at = str(apiserver.resource_version)
    async with running(kubeconfig) as r:
        assert r.names("Pod") == {"Pod/default/web"}
        assert r.names("Service") == {"Service/default/web"}
        assert r.names("Namespace") == {"Namespace/default"}
        assert r.names("Sidecar") == {"Sidecar/default/default"}
        assert r.names("ServiceEntry") == {"ServiceEntry/default/ext"}
        (mesh,) = [obj for _, obj in r.store.objects() if obj.ref.kind == "MeshConfig"]
        assert mesh.outbound_traffic_policy == "REGISTRY_ONLY"  # type: ignore[union-attr]
        assert r.store.problems == {}
        # Watches ask for bookmarks and resume from the list's resourceVersion.
        watch = apiserver.requests_for("pods", watch=True)[0]
        assert watch.query["allowWatchBookmarks"] == "true"
        assert watch.query["resourceVersion"] == listed_at


async def test_not_ready_until_every_kind_has_listed(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    apiserver.fail_next("services", 503, count=1000, verb="list")
    async with running(kubeconfig, wait_synced=False) as r:
        await eventually(lambda: len(apiserver.requests_for("services")) >= 3, "services retried")
        assert r.names("Pod") == set() and not r.store.synced("kubernetes") and not r.source.synced
        apiserver.clear_failures()
        await eventually(lambda: r.store.synced("kubernetes"), "ready once services list")


@pytest.mark.parametrize(
    ("kind", "make", "change"),
    [
        ("Pod", lambda: pod("p1"), lambda d: d["metadata"]["labels"].update(version="v2")),
        ("Service", lambda: service("s1"), lambda d: d["spec"]["ports"][0].update(port=8081)),
        ("Namespace", lambda: namespace("team"), lambda d: d["metadata"].update(labels={"a": "b"})),
        ("Sidecar", lambda: sidecar("sc"), lambda d: d["spec"]["egress"][0].update(hosts=["istio-system/*"])),
        ("ServiceEntry", lambda: service_entry("se"), lambda d: d["spec"].update(hosts=["other.example.com"])),
    ],
)
async def test_add_modify_delete_reach_the_store(
    apiserver: FakeApiServer, kubeconfig: Path, kind: str, make: Callable[[], dict[str, Any]],
    change: Callable[[dict[str, Any]], None],
) -> None:  # fmt: skip
    async with running(kubeconfig) as r:
        doc = make()
        stored = apiserver.apply(doc)
        key = ObjectRef(kind, stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
        await eventually(lambda: r.store.get(key) is not None, f"{key} added")
        first = r.store.get(key)
        change(doc)
        updated = apiserver.apply(doc)
        rv = updated["metadata"]["resourceVersion"]
        await eventually(lambda: r.store.get(key).meta.resource_version == rv, f"{key} modified")  # type: ignore[union-attr]
        assert r.store.get(key) != first
        apiserver.delete(kind, key.namespace, key.name)
        await eventually(lambda: r.store.get(key) is None, f"{key} deleted")
        plural = {"Pod": "pods", "Service": "services", "Namespace": "namespaces", "Sidecar": "sidecars",
                  "ServiceEntry": "serviceentries"}[kind]  # fmt: skip
        assert len(apiserver.requests_for(plural, watch=False)) == 1  # all of it came by watch


async def test_mesh_configmap_changes_and_removal(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    apiserver.apply({**mesh_configmap(), "metadata": {"name": "other", "namespace": "istio-system"}})
    async with running(kubeconfig) as r:
        assert r.names("MeshConfig") == set()  # only ConfigMap `istio` is asked for
        apiserver.apply(mesh_configmap("ALLOW_ANY"))
        await eventually(lambda: r.names("MeshConfig"), "mesh config")
        apiserver.delete("ConfigMap", "istio-system", "istio")
        await eventually(lambda: not r.names("MeshConfig"), "mesh config removed")
        assert all(q.query.get("fieldSelector") == "metadata.name=istio" for q in apiserver.requests_for("configmaps"))


async def test_paged_list_gets_everything(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    for i in range(7):
        apiserver.apply(pod(f"p{i}", ip=f"10.0.0.{i + 1}"))
    async with running(kubeconfig, page_size=3) as r:
        assert len(r.names("Pod")) == 7
        lists = apiserver.requests_for("pods", watch=False)
        assert [q.query.get("continue", "") != "" for q in lists] == [False, True, True]


# ---------------------------------------------------------------- resuming
async def test_dropped_watch_resumes_from_the_last_resource_version_without_relisting(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    async with running(kubeconfig) as r:
        apiserver.apply(pod("before"))
        await eventually(lambda: "Pod/default/before" in r.names("Pod"), "event before the drop")
        last = r.rv("kubernetes/Pod/*")
        watches = len(apiserver.requests_for("pods", watch=True))
        assert apiserver.drop_watches() >= 5
        apiserver.apply(pod("after"))
        await eventually(lambda: "Pod/default/after" in r.names("Pod"), "event after the drop")
        rewatch = apiserver.requests_for("pods", watch=True)[watches]
        assert rewatch.query["resourceVersion"] == last
        assert len(apiserver.requests_for("pods", watch=False)) == 1


async def test_watch_timeout_rewatches_from_the_last_resource_version(
    apiserver: FakeApiServer, kubeconfig: Path
) -> None:
    apiserver.apply(pod("a"))
    async with running(kubeconfig, watch_timeout=1) as r:
        await eventually(lambda: len(apiserver.requests_for("pods", watch=True)) >= 2, "second watch", 5)
        first, second = apiserver.requests_for("pods", watch=True)[:2]
        assert first.query["timeoutSeconds"] == "1"
        assert second.query["resourceVersion"] == first.query["resourceVersion"]
        assert len(apiserver.requests_for("pods", watch=False)) == 1
        assert r.names("Pod") == {"Pod/default/a"}


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
async def test_object_deleted_while_disconnected_is_removed_by_the_relist(
    apiserver: FakeApiServer, kubeconfig: Path, gone_as_http: bool
) -> None:
    apiserver.gone_as_http = gone_as_http
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


async def test_bookmarks_advance_the_resource_version(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    async with running(kubeconfig) as r:
        for i in range(3):  # writes the pods watch does not see
            apiserver.apply(service(f"s{i}"))
        now = str(apiserver.resource_version)
        assert r.rv("kubernetes/Pod/*") != now
        apiserver.bookmark()
        await eventually(lambda: r.rv("kubernetes/Pod/*") == now, "bookmark received")
        watches = len(apiserver.requests_for("pods", watch=True))
        apiserver.drop_watches("pods")
        await eventually(lambda: len(apiserver.requests_for("pods", watch=True)) > watches, "re-watch")
        assert apiserver.requests_for("pods", watch=True)[watches].query["resourceVersion"] == now


# ---------------------------------------------------------------- missing kinds, bad objects, errors
async def test_missing_crd_does_not_block_the_other_kinds(
    apiserver: FakeApiServer, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds_server.sources")
    apiserver.remove_resource("sidecars")
    apiserver.apply(pod("web"))
    async with running(kubeconfig) as r:  # ready without Sidecars
        assert r.names("Pod") == {"Pod/default/web"}
        await eventually(lambda: len(apiserver.requests_for("sidecars")) >= 6, "sidecars retried")
        warnings = [m for m in caplog.messages if "is not served" in m]
        assert len(warnings) == 1 and "networking.istio.io/v1" in warnings[0]
        # The CRD gets installed: the retrying reflector picks it up.
        apiserver.serve_versions("sidecars", ("v1",))
        apiserver.apply(sidecar("late"))
        await eventually(lambda: r.names("Sidecar") == {"Sidecar/default/late"}, "sidecar after install")


async def test_falls_back_to_v1beta1_when_v1_is_not_served(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    apiserver.serve_versions("serviceentries", ("v1beta1",))
    apiserver.apply(service_entry("ext"))
    async with running(kubeconfig) as r:
        assert r.names("ServiceEntry") == {"ServiceEntry/default/ext"}
        paths = [q.path for q in apiserver.requests_for("serviceentries")]
        assert paths[0].startswith("/apis/networking.istio.io/v1/")
        assert all(p.startswith("/apis/networking.istio.io/v1beta1/") for p in paths[1:])
        apiserver.apply(service_entry("ext2"))
        await eventually(lambda: "ServiceEntry/default/ext2" in r.names("ServiceEntry"), "watched at v1beta1")


async def test_malformed_object_is_rejected_and_the_others_accepted(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    apiserver.apply(sidecar("good"))
    apiserver.apply(bad_sidecar("broken"))
    async with running(kubeconfig) as r:
        assert r.names("Sidecar") == {"Sidecar/default/good"}
        (problem,) = r.store.problems["kubernetes/Sidecar/*"]
        assert problem.ref == ref("Sidecar", "broken") and "egress" in problem.message
        # Fixed: accepted, and the problem goes away.
        apiserver.apply(sidecar("broken"))
        await eventually(lambda: "Sidecar/default/broken" in r.names("Sidecar"), "fixed sidecar")
        assert "kubernetes/Sidecar/*" not in r.store.problems


async def test_malformed_update_keeps_the_last_good_version(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    good = apiserver.apply(sidecar("sc"))
    async with running(kubeconfig) as r:
        apiserver.apply(bad_sidecar("sc"))
        await eventually(lambda: "kubernetes/Sidecar/*" in r.store.problems, "problem reported")
        kept = r.store.get(ref("Sidecar", "sc"))
        assert kept is not None and kept.meta.resource_version == good["metadata"]["resourceVersion"]


async def test_namespace_restriction_watches_only_those_namespaces(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    for ns in ("a", "b", "c"):
        apiserver.apply(namespace(ns))
        apiserver.apply(pod("web", ns))
        apiserver.apply(sidecar("default", ns))
    apiserver.apply(mesh_configmap())
    async with running(kubeconfig, namespaces=["a", "b"]) as r:
        assert r.names("Pod") == {"Pod/a/web", "Pod/b/web"}
        assert r.names("Sidecar") == {"Sidecar/a/default", "Sidecar/b/default"}
        assert r.names("Namespace") == {"Namespace/a", "Namespace/b"}
        assert r.names("MeshConfig")  # the root namespace's ConfigMap is read whatever the restriction
        apiserver.apply(pod("late", "c"))
        apiserver.apply(pod("late", "a"))
        await eventually(lambda: "Pod/a/late" in r.names("Pod"), "pod in a watched namespace")
        assert "Pod/c/late" not in r.names("Pod")
        paths = {q.path for q in apiserver.requests}
        assert "/api/v1/pods" not in paths and "/api/v1/namespaces/a/pods" in paths
        assert "/apis/networking.istio.io/v1/namespaces/b/sidecars" in paths


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


async def test_forbidden_is_logged_clearly_once_and_retried(
    apiserver: FakeApiServer, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds_server.sources")
    apiserver.forbid("services")
    async with running(kubeconfig, wait_synced=False) as r:
        await eventually(lambda: len(apiserver.requests_for("services")) >= 4, "services retried")
        errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert len(errors) == 1 and "forbidden" in errors[0].getMessage() and "RBAC" in errors[0].getMessage()
        assert not r.store.synced("kubernetes")
        apiserver.forbid("services", False)
        await eventually(lambda: r.store.synced("kubernetes"), "sync once allowed")


async def test_unauthorized_is_logged_clearly(
    apiserver: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apiserver.token = "right"
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kc", token="wrong")
    async with running(kubeconfig, wait_synced=False):
        await eventually(lambda: any("not authenticated" in m for m in caplog.messages), "401 logged")


# ---------------------------------------------------------------- stopping
async def test_stop_joins_every_thread_promptly(apiserver: FakeApiServer, kubeconfig: Path) -> None:
    before = set(threading.enumerate())
    async with running(kubeconfig) as r:
        assert len(reflector_threads()) == 6
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert r.task.done()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("reflector ")]


async def test_stop_while_backing_off_from_an_unreachable_apiserver(
    apiserver: FakeApiServer, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apiserver.stop()  # connection refused from now on
    async with running(kubeconfig, wait_synced=False, backoff_base=30, backoff_max=30):
        # Every reflector has failed once and is now waiting 15-30 s before retrying.
        await eventually(lambda: sum("failed" in m for m in caplog.messages) >= 6, "every reflector failed")
        started = time.monotonic()
    assert time.monotonic() - started < 2.0


async def test_bad_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    source = KubernetesSource(tmp_path / "missing")
    with pytest.raises(KubeConfigError, match="missing"):
        await source.run(Store(), asyncio.Event())
