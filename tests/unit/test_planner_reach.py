"""The planner visits only the proxies a change can reach, and every snapshot stays what a fresh
translation gives.

A store is changed at random (Pods, Services, Sidecars, ServiceEntries in two namespaces) and
pushed through a Planner with its dependency index (push/dependencies.py); proxies connect, leave and
reconnect with a new node object between pushes. After every push each connected proxy's cached
snapshot must hold the same resources as one translated from scratch, and a Pod-only change must
not have visited proxies that import nothing of its namespace.
"""

from __future__ import annotations

import random

import pytest

from tests.unit.translate.test_incremental_generation import (
    NAMESPACES,
    _step,
    contents,
    dns_entry,
    pod,
    service,
    sidecar,
)
from xds_server.config import Kind, ObjectRef
from xds_server.push.dependencies import ProxyDependencies
from xds_server.push.planner import Planner
from xds_server.store import Store
from xds_server.store.view import ChangeSet
from xds_server.translate import Memo, generate, proxy_from_node


def _node(i: int, ns: str, j: int):  # type: ignore[no-untyped-def]
    return proxy_from_node(f"sidecar~10.0.{i}.{j}~p{j}.{ns}~{ns}.svc.cluster.local", {"NAMESPACE": ns})


def _nodes():  # type: ignore[no-untyped-def]
    out = [_node(i, ns, j) for i, ns in enumerate(NAMESPACES) for j in (1, 2)]
    out.append(proxy_from_node("sidecar~10.0.9.9~ghost.a~a.svc.cluster.local", {"NAMESPACE": "a"}))  # no Pod
    return out


@pytest.mark.parametrize("seed", range(12))
async def test_reached_proxies_only_and_every_snapshot_equals_a_fresh_one(seed: int) -> None:
    rng = random.Random(seed)
    store = Store()
    for ns in NAMESPACES:
        store.replace(f"svc/{ns}/web", [service("web", ns)])
        store.replace(f"pod/{ns}/p1", [pod("p1", ns, "web", f"10.0.{NAMESPACES.index(ns)}.1")])
    planner = Planner(store, generate, ProxyDependencies())
    wakers: dict[str, object] = {}
    entries = {}
    for proxy in _nodes():
        wakers[proxy.key] = waker = (lambda: None)
        entries[proxy.key] = (planner.cache.attach(proxy, waker), waker)
    for n in range(60):
        _step(rng, store, n)
        extra = rng.random()
        if extra < 0.08:  # the root namespace's Sidecar: every namespace's default
            store.replace("sidecar/root", [] if rng.random() < 0.5 else
                          [sidecar("istio-system", rng.choice(['"./*"', '"*/*"', '"a/*"']))])
        elif extra < 0.16:  # a ServiceEntry where no proxy lives: only */* (or c/*) scopes can see it
            store.replace("se/c", [] if rng.random() < 0.5 else [dns_entry("c", rng.choice([9000, 9001]))])
        if rng.random() < 0.15:  # a proxy leaves, or comes back with a new node object
            proxy = rng.choice(_nodes())
            if proxy.key in entries:
                entry, waker = entries.pop(proxy.key)
                planner.cache.detach(entry, waker)
            else:
                waker = lambda: None  # noqa: E731
                entries[proxy.key] = (planner.cache.attach(proxy, waker), waker)
        await planner.push(frozenset())
        view = store.view()
        assert planner.visited <= len(entries)
        for key, (entry, _) in entries.items():
            fresh = generate(view, entry.proxy, Memo()).snapshot
            assert contents(entry.snapshot) == contents(fresh), (seed, n, key)


async def test_a_pod_change_visits_only_the_proxies_that_import_its_namespace() -> None:
    store = Store()
    for ns in NAMESPACES:
        store.replace(f"svc/{ns}/web", [service("web", ns)])
        store.replace(f"sidecar/{ns}", [sidecar(ns, '"./*"')])
        for j in (1, 2):
            store.replace(f"pod/{ns}/p{j}", [pod(f"p{j}", ns, "web", f"10.0.{NAMESPACES.index(ns)}.{j}")])
    planner = Planner(store, generate, ProxyDependencies())
    proxies = [_node(i, ns, j) for i, ns in enumerate(NAMESPACES) for j in (1, 2)]
    entries = {p.key: planner.cache.attach(p, lambda: None) for p in proxies}
    await planner.push(frozenset())  # the first push visits everyone
    assert planner.visited == 4
    before = {k: e.snapshot for k, e in entries.items()}

    store.replace("pod/a/w", [pod("w", "a", "web", "10.1.0.7")])  # a new endpoint of a/web
    await planner.push(frozenset())
    assert planner.visited == 2  # only namespace a's proxies import a's services
    changed = {k for k, e in entries.items() if e.snapshot is not before[k]}
    assert changed == {p.key for p in proxies if p.namespace == "a"}
    for p in proxies:
        assert contents(entries[p.key].snapshot) == contents(generate(store.view(), p, Memo()).snapshot)

    # Many pushes elsewhere later, namespace b's proxies still carry their work over.
    for k in range(20):
        store.replace("pod/a/w", [pod("w", "a", "web", f"10.1.0.{k + 10}")])
        await planner.push(frozenset())
        assert planner.visited == 2
    store.replace("pod/b/w", [pod("w", "b", "web", "10.1.1.7")])
    await planner.push(frozenset())
    assert planner.visited == 2
    for p in proxies:
        assert contents(entries[p.key].snapshot) == contents(generate(store.view(), p, Memo()).snapshot)

    # A Sidecar change reaches the proxies of its namespace only.
    store.replace("sidecar/b", [sidecar("b", '"*/*"')])
    await planner.push(frozenset())
    assert planner.visited == 2
    snapshot = entries[proxies[2].key].snapshot
    assert any("a.svc" in name for name in snapshot.get(next(iter(snapshot.resources))))

    # A new Service in a: a's proxies (./*) and b's, whose */* can import it; not when b is back to ./*.
    store.replace("svc/a/db", [service("db", "a", 5432)])
    await planner.push(frozenset())
    assert planner.visited == 4
    store.replace("sidecar/b", [sidecar("b", '"./*"')])
    await planner.push(frozenset())
    store.replace("svc/a/db", [])
    await planner.push(frozenset())
    assert planner.visited == 2
    for p in proxies:
        assert contents(entries[p.key].snapshot) == contents(generate(store.view(), p, Memo()).snapshot)

    # A Service of a reaches a's proxies even when their egress imports nothing of a (inbound side).
    store.replace("sidecar/a", [sidecar("a", '"b/*"')])
    await planner.push(frozenset())
    store.replace("svc/a/db", [service("db", "a", 5432, app="web")])
    await planner.push(frozenset())
    assert planner.visited == 2
    for p in proxies:
        assert contents(entries[p.key].snapshot) == contents(generate(store.view(), p, Memo()).snapshot)


async def test_a_disconnected_proxy_is_forgotten() -> None:
    store = Store()
    store.replace("svc/a/web", [service("web", "a")])
    store.replace("pod/a/p1", [pod("p1", "a", "web", "10.0.0.1")])
    planner = Planner(store, generate, ProxyDependencies())
    proxy = _node(0, "a", 1)
    wake = lambda: None  # noqa: E731
    entry = planner.cache.attach(proxy, wake)
    index = planner.dependencies
    assert proxy.key in index
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.POD, "a", "other")]), ROOT) == {proxy.key}
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.SERVICE, "z", "other")]), ROOT) == {proxy.key}  # */*
    planner.cache.detach(entry, wake)
    assert proxy.key not in index
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.POD, "a", "other")]), ROOT) == set()
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.SERVICE, "z", "other")]), ROOT) == set()


def test_what_reaches_everyone() -> None:
    index = ProxyDependencies()
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.NAMESPACE, "", "a")]), ROOT) is None
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.MESH_CONFIG, ROOT, "istio")]), ROOT) is None
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.SIDECAR, ROOT, "default")]), ROOT) is None
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.SIDECAR, "a", "default")]), ROOT) == set()
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.POD, "a", "x")]), ROOT) == set()


ROOT = "istio-system"
