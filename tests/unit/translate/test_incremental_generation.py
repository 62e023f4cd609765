"""Work carried over from the previous generation gives exactly what a fresh translation gives.

Given a proxy's last result, the generator carries scopes, outbound plans and the proxy's own
parts over and re-reads only what a change can touch (Pods of one namespace: endpoints there; a
proxy's own Pod, its namespace's Services and Sidecars: its inbound side, as the push stage's
dependency index says). A store is changed at random, step by step; after every step each proxy's
snapshot from the long-lived memo (rotated like the planner does) and its last result (a proxy
sometimes skips a generation) must hold the same resources as one translated from scratch.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from xds_server.config.parse import parse
from xds_server.push.dependencies import ProxyDependencies
from xds_server.resources import PUSH_ORDER
from xds_server.store import Store
from xds_server.translate import Memo, generate, proxy_from_node

NAMESPACES = ("a", "b")


def _doc(text: str) -> Any:
    obj, problems = parse(yaml.safe_load(text), "test")
    assert obj is not None, problems
    return obj


def service(name: str, ns: str, port: int = 80, headless: bool = False, app: str = "") -> Any:
    ip = "None" if headless else f"10.96.{NAMESPACES.index(ns)}.{sum(map(ord, name)) % 250 + 1}"
    pname = "http" if port == 80 else "tcp"
    return _doc(f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{clusterIP: {ip}, selector: {{app: {app or name}}}, ports: [{{name: {pname}, port: {port}}}]}}
""")


def pod(name: str, ns: str, app: str, ip: str, ready: bool = True) -> Any:
    return _doc(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}
spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
status: {{podIP: {ip}, conditions: [{{type: Ready, status: "{'True' if ready else 'False'}"}}]}}
""")


def sidecar(ns: str, hosts: str) -> Any:
    return _doc(f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {ns}}}
spec: {{egress: [{{hosts: [{hosts}]}}]}}
""")


def dns_entry(ns: str, port: int) -> Any:
    return _doc(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: {ns}}}
spec: {{hosts: [ext.example.com], ports: [{{number: {port}, name: tcp, protocol: TCP}}], resolution: DNS,
       workloadSelector: {{labels: {{app: web}}}}}}
""")


def contents(snapshot: Any) -> dict[str, dict[str, str]]:
    return {t.value: {n: b.version for n, b in snapshot.get(t).items()} for t in PUSH_ORDER}


PROXIES = [proxy_from_node(f"sidecar~10.0.{i}.{j}~p{j}.{ns}~{ns}.svc.cluster.local", {"NAMESPACE": ns})
           for i, ns in enumerate(NAMESPACES) for j in (1, 2)]
PROXIES.append(proxy_from_node("sidecar~10.0.9.9~ghost.a~a.svc.cluster.local", {"NAMESPACE": "a"}))  # no Pod


def _step(rng: random.Random, store: Store, n: int) -> None:
    ns = rng.choice(NAMESPACES)
    kind = rng.randrange(9)
    if kind <= 3:  # pods come, go, change readiness; some are the proxies' own pods
        name = rng.choice(["p1", "p2", f"w{n % 4}"])
        ip = f"10.0.{NAMESPACES.index(ns)}.{name[1:]}" if name.startswith("p") else f"10.1.{n % 4}.{n % 7 + 1}"
        if rng.random() < 0.3:
            store.replace(f"pod/{ns}/{name}", ())
        else:
            store.replace(f"pod/{ns}/{name}", [pod(name, ns, rng.choice(["web", "db"]), ip, rng.random() < 0.8)])
    elif kind == 4:
        name = rng.choice(["web", "db", "hl"])
        objs = [] if rng.random() < 0.3 else [service(name, ns, rng.choice([80, 5432]), headless=name == "hl",
                                                       app="web" if name == "hl" else "")]
        store.replace(f"svc/{ns}/{name}", objs)
    elif kind == 5:
        store.replace(f"sidecar/{ns}", [] if rng.random() < 0.4 else [sidecar(ns, rng.choice(['"./*"', '"*/*"']))])
    elif kind == 6:
        store.replace(f"se/{ns}", [] if rng.random() < 0.5 else [dns_entry(ns, rng.choice([9000, 9001]))])
    else:
        pass  # no change: the same generation again


@pytest.mark.parametrize("seed", range(16))
def test_carried_over_translation_equals_a_fresh_one(seed: int) -> None:
    rng = random.Random(seed)
    store = Store()
    for ns in NAMESPACES:
        store.replace(f"svc/{ns}/web", [service("web", ns)])
        store.replace(f"pod/{ns}/p1", [pod("p1", ns, "web", f"10.0.{NAMESPACES.index(ns)}.1")])
    memo = Memo()
    last = ProxyDependencies()
    for n in range(60):
        _step(rng, store, n)
        memo.rotate()
        view = store.view()
        for proxy in PROXIES:
            if rng.random() < 0.2:
                continue  # not translated at this generation: the next time spans several (or a rotated memo)
            kept = generate(view, proxy, memo, last.previous(proxy.key, view))
            last.put(proxy.key, kept)
            fresh = generate(view, proxy, Memo())
            assert contents(kept.snapshot) == contents(fresh.snapshot), (seed, n, proxy.node_id)


def test_own_parts_are_carried_over_unless_a_change_touches_them() -> None:
    store = Store()
    for ns in NAMESPACES:
        store.replace(f"svc/{ns}/web", [service("web", ns)])
        store.replace(f"pod/{ns}/p1", [pod("p1", ns, "web", f"10.0.{NAMESPACES.index(ns)}.1")])
    proxy = PROXIES[0]  # p1.a
    last = ProxyDependencies()
    memo = Memo()
    first = generate(store.view(), proxy, memo)
    assert first.depends_on is not None and first.depends_on.pod is not None
    last.put(proxy.key, first)

    store.replace("pod/b/w", [pod("w", "b", "web", "10.1.0.9")])  # an endpoint elsewhere: own side untouched
    view = store.view()
    previous = last.previous(proxy.key, view)
    assert previous is not None and not previous.own_side_changed
    second = generate(view, proxy, memo, previous)
    assert second.parts is first.parts
    assert second.depends_on is first.depends_on
    last.put(proxy.key, second)

    store.replace("pod/a/p1", [pod("p1", "a", "web", "10.0.0.1", ready=False)])  # its own Pod
    view = store.view()
    previous = last.previous(proxy.key, view)
    assert previous is not None and previous.own_side_changed
    third = generate(view, proxy, memo, previous)
    assert third.parts is not second.parts
    assert contents(third.snapshot) == contents(generate(view, proxy, Memo()).snapshot)
