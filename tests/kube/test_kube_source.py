"""The Kubernetes source (official client, reflector threads) against a real kube-apiserver + etcd,
into a real Store: list, watch, bookmarks, resuming, 410 Gone, restarts, CRDs, RBAC, bad objects,
bursts. What a real server cannot be made to do stays on the protocol double
(tests/integration/test_kube_source.py).

Every test works in namespaces of its own (the apiserver is shared by the session) and, when it
watches the whole cluster, looks only at those.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.envtest import EnvTest
from tests.kube.plugin import ISTIO_CRDS
from tests.kube.source_harness import (
    eventually,
    mesh_configmap,
    pod,
    reflector_threads,
    running,
    service,
    service_entry,
    sidecar,
)
from tests.kube.tcp_proxy import TcpRelay
from xds_server.config import IstioDestinationRule, IstioVirtualService, ObjectRef
from xds_server.sources.kube_kinds import watch_targets

POD_ORIGIN = "kubernetes/Pod/*"


@pytest.fixture
def kubeconfig(kube_api: EnvTest, istio_crds: list[str]) -> Path:
    return kube_api.kubeconfig()


@pytest.fixture
def relay(kube_api: EnvTest) -> Iterator[TcpRelay]:
    with TcpRelay(kube_api.apiserver_port) as r:
        yield r


@pytest.fixture
def relayed_kubeconfig(kube_api: EnvTest, istio_crds: list[str], relay: TcpRelay) -> Path:
    return kube_api.kubeconfig(server=relay.url)


@pytest.fixture
def other_namespace(kube_api: EnvTest) -> Iterator[str]:
    name = kube_api.new_namespace("u")
    try:
        yield name
    finally:
        kube_api.delete_namespace(name)


def create_pod(kube_api: EnvTest, name: str, ns: str, ip: str, **labels: str) -> dict:
    doc = pod(name, ns, ip, **labels)
    del doc["status"]
    kube_api.create(doc)
    return kube_api.set_pod_status(ns, name, ip)


# ---------------------------------------------------------------- list and watch
async def test_initial_list_then_watch_of_every_kind(kube_api: EnvTest, kubeconfig: Path, kube_namespace: str) -> None:
    ns = kube_namespace
    create_pod(kube_api, "web", ns, "198.18.1.1")
    kube_api.create(service("web", ns))
    kube_api.create(sidecar("default", ns))
    kube_api.create(service_entry("ext", ns))
    kube_api.create(mesh_configmap("REGISTRY_ONLY", ns))
    other = mesh_configmap("ALLOW_ANY", ns)
    other["metadata"]["name"] = "other"  # only ConfigMap `istio` configures the mesh
    kube_api.create(other)
    # The test's namespace is the root namespace, so the mesh ConfigMap is its own.
    async with running(kubeconfig, root_namespace=ns) as r:
        assert r.names("Pod", ns) == {f"Pod/{ns}/web"}
        (listed,) = [o for _, o in r.store.objects() if o.ref == ObjectRef("Pod", ns, "web")]
        assert listed.ips == ("198.18.1.1",) and listed.ready  # type: ignore[attr-defined]
        assert r.names("Service", ns) == {f"Service/{ns}/web"}
        assert f"Namespace/{ns}" in r.names("Namespace")
        assert r.names("Sidecar", ns) == {f"Sidecar/{ns}/default"}
        assert r.names("ServiceEntry", ns) == {f"ServiceEntry/{ns}/ext"}
        (mesh,) = [obj for _, obj in r.store.objects() if obj.ref.kind == "MeshConfig"]
        assert mesh.outbound_traffic_policy == "REGISTRY_ONLY"  # type: ignore[attr-defined]
        assert not [p for ps in r.store.problems.values() for p in ps if p.ref and p.ref.namespace == ns]

        # Watched: add, modify, delete of each kind.
        create_pod(kube_api, "late", ns, "198.18.1.2")
        kube_api.create(service("late", ns))
        kube_api.create(sidecar("late", ns))
        kube_api.create(service_entry("late", ns, "late.example.com"))
        for kind in ("Pod", "Service", "Sidecar", "ServiceEntry"):
            await eventually(lambda kind=kind: f"{kind}/{ns}/late" in r.names(kind, ns), f"{kind} added")
        kube_api.set_pod_status(ns, "late", "198.18.1.2", ready=False)
        await eventually(lambda: not r.store.get(ObjectRef("Pod", ns, "late")).ready,  # type: ignore[union-attr]
                         "pod became unready")
        changed = sidecar("late", ns, ("istio-system/*",))
        kube_api.apply(changed)
        await eventually(lambda: r.store.get(ObjectRef("Sidecar", ns, "late")).spec.egress[0].hosts  # type: ignore
                         == ["istio-system/*"], "sidecar modified")
        kube_api.apply(mesh_configmap("ALLOW_ANY", ns))
        await eventually(lambda: [o.outbound_traffic_policy for _, o in r.store.objects()  # type: ignore[attr-defined]
                                  if o.ref.kind == "MeshConfig"] == ["ALLOW_ANY"], "mesh config modified")
        for doc in (pod("late", ns), service("late", ns), sidecar("late", ns), service_entry("late", ns),
                    mesh_configmap(ns=ns)):
            kube_api.delete(doc)
        for kind in ("Pod", "Service", "Sidecar", "ServiceEntry"):
            await eventually(lambda kind=kind: f"{kind}/{ns}/late" not in r.names(kind, ns), f"{kind} deleted")
        await eventually(lambda: not r.names("MeshConfig"), "mesh config removed")
        # Everything after the list came by watch.
        assert all(lists == 1 for lists, _ in r.source.request_counts.values()), r.source.request_counts


async def test_a_small_page_size_still_lists_everything(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str
) -> None:
    for i in range(7):
        kube_api.create(service_entry(f"se{i}", kube_namespace, f"h{i}.example.com"))
    async with running(kubeconfig, namespaces=[kube_namespace], page_size=3) as r:
        assert len(r.names("ServiceEntry", kube_namespace)) == 7


async def test_bookmarks_advance_the_resource_version_without_events(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str, other_namespace: str
) -> None:
    # The apiserver sends a bookmark 2 s before a watch's timeout (and at least every minute)
    # with the resourceVersion its watch cache of that resource has reached: with watch timeouts
    # of 3-6 s, one arrives within a few seconds, past a pod written in another namespace.
    async with running(kubeconfig, namespaces=[kube_namespace], watch_timeout=3) as r:
        origin = f"kubernetes/Pod/{kube_namespace}"
        before = int(r.rv(origin))
        written = create_pod(kube_api, "elsewhere", other_namespace, "198.18.5.1")  # not seen by this watch
        rv = int(written["metadata"]["resourceVersion"])
        await eventually(lambda: int(r.rv(origin)) >= rv, "a bookmark past the other namespace's write", 10)
        assert before < rv
        assert r.lists(origin) == 1
        # The watch that ends at its timeout is resumed from the bookmark, not relisted.
        watches = r.watches(origin)
        await eventually(lambda: r.watches(origin) > watches, "the next watch", 10)
        assert r.lists(origin) == 1


# ---------------------------------------------------------------- resuming
async def test_dropped_watch_resumes_from_the_last_resource_version_without_relisting(
    kube_api: EnvTest, relayed_kubeconfig: Path, relay: TcpRelay, kube_namespace: str
) -> None:
    ns = kube_namespace
    async with running(relayed_kubeconfig, namespaces=[ns]) as r:
        origin = f"kubernetes/ServiceEntry/{ns}"
        kube_api.create(service_entry("before", ns, "before.example.com"))
        await eventually(lambda: f"ServiceEntry/{ns}/before" in r.names("ServiceEntry"), "event before the drop")
        watches = r.watches(origin)
        relay.refuse()
        assert relay.drop() >= 1
        # Written while the source cannot connect: it must catch up from its resourceVersion.
        kube_api.create(service_entry("meanwhile", ns, "meanwhile.example.com"))
        kube_api.delete(service_entry("before", ns))
        relay.refuse(False)
        kube_api.create(service_entry("after", ns, "after.example.com"))
        await eventually(lambda: r.names("ServiceEntry", ns) == {f"ServiceEntry/{ns}/meanwhile",
                                                                 f"ServiceEntry/{ns}/after"}, "caught up")
        assert r.watches(origin) > watches
        assert all(lists == 1 for lists, _ in r.source.request_counts.values()), r.source.request_counts


async def test_compaction_while_disconnected_relists_with_nothing_lost_or_duplicated(
    kube_api: EnvTest, relayed_kubeconfig: Path, relay: TcpRelay, kube_namespace: str
) -> None:
    ns = kube_namespace
    for name in ("stays", "goes", "changes"):
        create_pod(kube_api, name, ns, "198.18.2.1")
    async with running(relayed_kubeconfig, namespaces=[ns]) as r:
        origin = f"kubernetes/Pod/{ns}"
        assert r.names("Pod", ns) == {f"Pod/{ns}/stays", f"Pod/{ns}/goes", f"Pod/{ns}/changes"}
        stays = r.store.get(ObjectRef("Pod", ns, "stays"))
        relay.refuse()
        relay.drop()
        kube_api.delete(pod("goes", ns))
        create_pod(kube_api, "new", ns, "198.18.2.2")
        kube_api.set_pod_status(ns, "changes", "198.18.2.3")
        # Compacted while the apiserver is down: its new watch cache starts after the source's
        # resourceVersion and etcd no longer has the history, so the resumed watch gets 410 Gone.
        kube_api.restart_apiserver(compact=True)
        relay.refuse(False)
        await eventually(lambda: r.lists(origin) == 2, "relist after 410")
        await eventually(lambda: r.names("Pod", ns) == {f"Pod/{ns}/stays", f"Pod/{ns}/changes", f"Pod/{ns}/new"},
                         "relisted state")
        assert r.store.get(ObjectRef("Pod", ns, "changes")).ips == ("198.18.2.3",)  # type: ignore[union-attr]
        # The unchanged pod is the very object listed first: the relist did not re-add it.
        assert r.store.get(ObjectRef("Pod", ns, "stays")) is stays
        # And the watch goes on from the relist.
        create_pod(kube_api, "later", ns, "198.18.2.4")
        await eventually(lambda: f"Pod/{ns}/later" in r.names("Pod", ns), "watched after the relist")


async def test_apiserver_restart_mid_watch(kube_api: EnvTest, kubeconfig: Path, kube_namespace: str) -> None:
    ns = kube_namespace
    async with running(kubeconfig, namespaces=[ns]) as r:
        kube_api.create(sidecar("before", ns))
        await eventually(lambda: f"Sidecar/{ns}/before" in r.names("Sidecar", ns), "before the restart")
        before = r.store.get(ObjectRef("Sidecar", ns, "before"))
        kube_api.restart_apiserver(crash=True)
        kube_api.create(sidecar("after", ns))
        await eventually(lambda: r.names("Sidecar", ns) == {f"Sidecar/{ns}/before", f"Sidecar/{ns}/after"},
                         "after the restart")
        # The new apiserver's watch cache starts at etcd's current revision, so a watch resumed
        # from an older resourceVersion may be answered 410 and relisted (as client-go does); a
        # relist that finds an object unchanged keeps the very object the store holds.
        assert r.store.get(ObjectRef("Sidecar", ns, "before")) is before


# ---------------------------------------------------------------- CRDs
async def test_crd_created_after_the_server_started(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds_server.sources")
    kube_api.delete_crd("sidecars.networking.istio.io")
    try:
        create_pod(kube_api, "web", kube_namespace, "198.18.3.1")
        async with running(kubeconfig, namespaces=[kube_namespace]) as r:  # ready without Sidecars
            assert r.names("Pod", kube_namespace) == {f"Pod/{kube_namespace}/web"}
            warnings = [m for m in caplog.messages if "is not served" in m]
            assert len(warnings) == 1 and "networking.istio.io/v1" in warnings[0], warnings
            kube_api.install_crds(ISTIO_CRDS)
            kube_api.create(sidecar("late", kube_namespace))
            await eventually(lambda: r.names("Sidecar") == {f"Sidecar/{kube_namespace}/late"}, "sidecar after install")
    finally:
        kube_api.install_crds(ISTIO_CRDS)  # as the other tests expect it, whatever happened here


async def test_falls_back_to_v1beta1_when_v1_is_not_served(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str
) -> None:
    crd = "serviceentries.networking.istio.io"
    versions = [v["name"] for v in kube_api.request(
        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")["spec"]["versions"]]
    kube_api.patch_crd(crd, [{"op": "replace", "path": f"/spec/versions/{versions.index('v1')}/served",
                              "value": False}])
    try:
        await eventually(lambda: not kube_api.exists("/apis/networking.istio.io/v1/serviceentries"),
                         "v1 no longer served")
        doc = service_entry("ext", kube_namespace)
        doc["apiVersion"] = "networking.istio.io/v1beta1"
        kube_api.create(doc)
        async with running(kubeconfig, namespaces=[kube_namespace]) as r:
            assert r.names("ServiceEntry") == {f"ServiceEntry/{kube_namespace}/ext"}
            late = service_entry("late", kube_namespace, "late.example.com")
            late["apiVersion"] = "networking.istio.io/v1beta1"
            kube_api.create(late)
            await eventually(lambda: f"ServiceEntry/{kube_namespace}/late" in r.names("ServiceEntry"),
                             "watched at v1beta1")
    finally:
        kube_api.install_crds(ISTIO_CRDS)  # serves v1 again


# ---------------------------------------------------------------- scope and bad objects
async def test_namespace_restriction_watches_only_those_namespaces(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str, other_namespace: str
) -> None:
    outside = kube_api.new_namespace("c")
    try:
        for ns in (kube_namespace, other_namespace, outside):
            create_pod(kube_api, "web", ns, "198.18.4.1")
            kube_api.create(sidecar("default", ns))
        kube_api.create(mesh_configmap("REGISTRY_ONLY", outside))  # the root namespace is read regardless
        async with running(kubeconfig, namespaces=[kube_namespace, other_namespace], root_namespace=outside) as r:
            assert r.names("Pod") == {f"Pod/{kube_namespace}/web", f"Pod/{other_namespace}/web"}
            assert r.names("Sidecar") == {f"Sidecar/{kube_namespace}/default", f"Sidecar/{other_namespace}/default"}
            assert r.names("Namespace") == {f"Namespace/{kube_namespace}", f"Namespace/{other_namespace}"}
            assert r.names("MeshConfig")
            create_pod(kube_api, "late", outside, "198.18.4.2")
            create_pod(kube_api, "late", kube_namespace, "198.18.4.3")
            await eventually(lambda: f"Pod/{kube_namespace}/late" in r.names("Pod"), "pod in a watched namespace")
            assert f"Pod/{outside}/late" not in r.names("Pod")
    finally:
        kube_api.delete_namespace(outside)


async def test_an_istio_invalid_object_is_rejected_alone_and_good_state_stays(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str
) -> None:
    ns = kube_namespace
    origin = f"kubernetes/Sidecar/{ns}"
    kube_api.create(sidecar("good", ns))
    # Valid for the CRD's schema (hosts are strings), invalid for Istio (no namespace/ prefix).
    kube_api.create(sidecar("broken", ns, ("nope",)))
    async with running(kubeconfig, namespaces=[ns]) as r:
        assert r.names("Sidecar") == {f"Sidecar/{ns}/good"}
        (problem,) = r.store.problems[origin]
        assert problem.ref == ObjectRef("Sidecar", ns, "broken")
        assert "spec.egress[0].hosts[0]" in problem.message and "nope" in problem.message
        # A bad update of the good one keeps serving its last good version.
        good = r.store.get(ObjectRef("Sidecar", ns, "good"))
        kube_api.apply(sidecar("good", ns, ("also-bad",)))
        await eventually(lambda: len(r.store.problems.get(origin, ())) == 2, "second problem reported")
        assert r.store.get(ObjectRef("Sidecar", ns, "good")) is good
        # Both fixed: accepted, and the problems go away.
        kube_api.apply(sidecar("good", ns, ("./*", "istio-system/*")))
        kube_api.apply(sidecar("broken", ns))
        await eventually(lambda: r.names("Sidecar") == {f"Sidecar/{ns}/good", f"Sidecar/{ns}/broken"}, "fixed")
        await eventually(lambda: origin not in r.store.problems, "problems withdrawn")


# ---------------------------------------------------------------- volume
async def test_a_burst_of_1000_pods_is_all_watched_then_all_listed(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str
) -> None:
    ns = kube_namespace
    count = 1000

    def make(i: int) -> None:
        doc = pod(f"p{i:04d}", ns, f"198.18.{100 + i // 250}.{i % 250 + 1}", app="burst")
        del doc["status"]
        kube_api.create(doc)

    async with running(kubeconfig, namespaces=[ns]) as r:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            await asyncio.get_running_loop().run_in_executor(None, lambda: list(pool.map(make, range(count))))
        written = time.monotonic() - started
        await eventually(lambda: len(r.names("Pod", ns)) == count, f"{count} pods watched", 60)
        seen = time.monotonic() - started
        assert r.lists(f"kubernetes/Pod/{ns}") == 1
    logging.getLogger(__name__).info("burst of %d pods: written in %.2fs, all in the store at %.2fs",
                                     count, written, seen)
    # A fresh source lists them, in pages.
    async with running(kubeconfig, namespaces=[ns], page_size=100) as r:
        assert len(r.names("Pod", ns)) == count


# ---------------------------------------------------------------- credentials and RBAC
def reader_token(kube_api: EnvTest, ns: str, resources: dict[str, list[str]]) -> str:
    """A ServiceAccount in `ns` bound to a ClusterRole with get/list/watch on these resources
    (group -> plurals); the ClusterRole is named after the namespace so tests do not collide."""
    kube_api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": ns}})
    set_reader_rules(kube_api, ns, resources)
    kube_api.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"reader-{ns}"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"reader-{ns}"},
                    "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]})
    return kube_api.token_for(ns, "reader")


def set_reader_rules(kube_api: EnvTest, ns: str, resources: dict[str, list[str]]) -> None:
    kube_api.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": f"reader-{ns}"},
                    "rules": [{"apiGroups": [g], "resources": r, "verbs": ["get", "list", "watch"]}
                              for g, r in resources.items()]})


@pytest.fixture
def cleanup_reader(kube_api: EnvTest, kube_namespace: str) -> Iterator[None]:
    yield
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        kube_api.delete({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                         "metadata": {"name": f"reader-{kube_namespace}"}})


@pytest.mark.usefixtures("cleanup_reader")
async def test_forbidden_is_logged_clearly_once_and_the_source_is_not_ready_until_allowed(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds_server.sources")
    everything_but_services = {"": ["pods", "namespaces", "configmaps"], "networking.istio.io": [
        "sidecars", "serviceentries", "virtualservices", "destinationrules"]}
    token = reader_token(kube_api, kube_namespace, everything_but_services)
    async with running(kube_api.kubeconfig(token), wait_synced=False, namespaces=[kube_namespace]) as r:
        origin = f"kubernetes/Service/{kube_namespace}"
        await eventually(lambda: r.source.request_counts.get(origin) is not None
                         and sum("forbidden" in m for m in caplog.messages) >= 1, "services refused")
        await eventually(lambda: r.lists(f"kubernetes/Pod/{kube_namespace}") == 1, "pods listed")
        assert not r.store.synced("kubernetes") and not r.source.synced
        errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert len(errors) == 1 and "forbidden" in errors[0] and "RBAC" in errors[0], errors
        set_reader_rules(kube_api, kube_namespace, everything_but_services | {"": ["pods", "namespaces", "configmaps",
                                                                                 "services"]})
        await eventually(lambda: r.store.synced("kubernetes"), "ready once allowed")


async def test_a_wrong_token_is_logged_clearly(
    kube_api: EnvTest, kube_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(kube_api.kubeconfig("wrong-token"), wait_synced=False, namespaces=[kube_namespace]) as r:
        await eventually(lambda: any("not authenticated" in m for m in caplog.messages), "401 logged")
        assert not r.store.synced("kubernetes")


# ---------------------------------------------------------------- traffic management kinds
TRAFFIC = Path(__file__).resolve().parents[1] / "fixtures" / "manifests" / "traffic"


def _traffic_objects(ns: str) -> list[dict[str, Any]]:
    """The every-field VirtualServices and DestinationRules, moved into `ns`."""
    docs = []
    for name in ("virtualservice-every-field.yaml", "destinationrule-every-field.yaml"):
        for doc in yaml.safe_load_all((TRAFFIC / name).read_text()):
            doc["metadata"]["namespace"] = ns
            docs.append(doc)
    return docs


async def test_virtual_services_and_destination_rules_arrive_with_every_field_and_bad_ones_are_rejected_alone(
    kube_api: EnvTest, kubeconfig: Path, kube_namespace: str
) -> None:
    ns = kube_namespace
    docs = _traffic_objects(ns)
    for doc in docs:
        created = kube_api.create(doc)
        assert created["spec"] == doc["spec"]  # the CRD schema prunes nothing the server reads
    async with running(kubeconfig, namespaces=[ns]) as r:
        assert r.names("VirtualService") == {f"VirtualService/{ns}/reviews", f"VirtualService/{ns}/team-routes"}
        assert r.names("DestinationRule") == {f"DestinationRule/{ns}/reviews",
                                              f"DestinationRule/{ns}/reviews-for-productpage"}
        vs = r.store.get(ObjectRef("VirtualService", ns, "reviews"))
        assert isinstance(vs, IstioVirtualService)
        assert vs.spec.http[0].match[0].headers["end-user"].exact == "jason"
        assert vs.spec.http[5].direct_response.body.bytes == b"hello"
        dr = r.store.get(ObjectRef("DestinationRule", ns, "reviews"))
        assert isinstance(dr, IstioDestinationRule)
        assert dr.spec.traffic_policy.port_level_settings[1].load_balancer.consistent_hash.maglev.table_size == 65537
        # Valid for the CRD's schema (a string), invalid for Istio (not RE2): rejected alone, the
        # last good version kept, the problem named by its field path.
        bad = _traffic_objects(ns)[0]
        bad["spec"]["http"][0]["match"][0]["uri"] = {"regex": "(?!x)"}
        kube_api.apply(bad)
        origin = f"kubernetes/VirtualService/{ns}"
        await eventually(lambda: origin in r.store.problems, "problem reported")
        (problem,) = r.store.problems[origin]
        assert problem.ref == ObjectRef("VirtualService", ns, "reviews")
        assert problem.message.startswith("spec.http[0].match[0].uri.regex: invalid regex '(?!x)'")
        assert r.store.get(ObjectRef("VirtualService", ns, "reviews")) is vs
        assert r.store.get(ObjectRef("DestinationRule", ns, "reviews")) is dr
        kube_api.apply(_traffic_objects(ns)[0])
        await eventually(lambda: origin not in r.store.problems, "problem withdrawn once fixed")


# ---------------------------------------------------------------- stopping
async def test_stop_joins_every_thread_promptly(kubeconfig: Path) -> None:
    before = set(threading.enumerate())
    async with running(kubeconfig) as r:
        assert len(reflector_threads()) == len(watch_targets((), "istio-system"))  # one per kind
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert r.task.done()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("reflector ")]


async def test_stop_while_backing_off_from_an_unreachable_apiserver(
    kube_api: EnvTest, relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    relay.refuse()  # every connection is closed at once
    kubeconfig = kube_api.kubeconfig(server=relay.url)
    async with running(kubeconfig, wait_synced=False, backoff_base=30, backoff_max=30):
        # Every reflector has failed once and is now waiting 15-30 s before retrying.
        await eventually(lambda: sum("failed" in m for m in caplog.messages) >= 6, "every reflector failed")
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
