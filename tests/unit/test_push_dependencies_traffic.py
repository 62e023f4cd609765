"""Which proxies a VirtualService or DestinationRule change reaches (istiod's proxy_dependencies.go
`proxyDependentOnConfig`: the new or the previous SidecarScope depends on it), on real config:
each proxy's dependencies come from `generate`, the change goes through a real Store, and the
index answers with the view being pushed.

Then a property: over random changes, pushed as the planner does (only the proxies reached are
translated again, from their last result), every proxy holds what a translation from scratch
gives; every proxy whose scope now reads something different of the rules (the VirtualServices
its egress listeners select, with their delegates; the
DestinationRule that applies to each of its hosts) is among those reached, and a VirtualService
change leaves the very same Scope to every proxy it does not reach.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster

from tests.unit.translate.test_incremental_generation import _doc, contents, pod, service, sidecar
from xds_server.config import Kind, ObjectRef
from xds_server.memo import Memo
from xds_server.mesh.rules import traffic_rules
from xds_server.mesh.scope import ProxyTraits, Scope, destination_hosts, scope_for
from xds_server.mesh.workload import sidecar_for, workload_of
from xds_server.push.dependencies import ProxyDependencies
from xds_server.resources import TypeUrl
from xds_server.store import Store
from xds_server.store.view import StoreView
from xds_server.translate import generate, proxy_from_node
from xds_server.translate.generator import traits_of

ROOT = "istio-system"
NAMESPACES = ("a", "b")  # the services' namespaces (test_incremental_generation's address plan)


def vs(name: str, ns: str, hosts: str, *, dest: str = "", delegate: str = "", gateways: str = "",
       export_to: str = "", created: int = 0, tcp: bool = False) -> Any:
    route = f"[{{route: [{{destination: {{host: {dest or hosts.split(',')[0] or 'web.a.svc.cluster.local'}}}}}]}}]"
    rules = f"tcp: {route}" if tcp else f"http: {route}"
    if delegate:
        rules = f"http: [{{delegate: {{name: {delegate}}}}}]"
    extra = (f", gateways: [{gateways}]" if gateways else "") + (f", exportTo: [{export_to}]" if export_to else "")
    return _doc(f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "2026-01-01T00:00:{created:02d}Z"}}
spec: {{hosts: [{hosts}], {rules}{extra}}}
""")


def dr(name: str, ns: str, host: str, *, selector: str = "", export_to: str = "", created: int = 0,
       subset: str = "v1", pool: int = 0) -> Any:
    extra = (f", workloadSelector: {{matchLabels: {{{selector}}}}}" if selector else "") + (
        f", exportTo: [{export_to}]" if export_to else "") + (
        f", trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: {pool}}}}}}}" if pool else "")
    return _doc(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "2026-01-01T00:00:{created:02d}Z"}}
spec: {{host: {host}, subsets: [{{name: {subset}, labels: {{version: {subset}}}}}]{extra}}}
""")


def node(ns: str, name: str = "p1", labels: dict[str, str] | None = None) -> Any:
    return proxy_from_node(f"sidecar~10.0.{ord(ns[0]) % 250}.{len(name)}~{name}.{ns}~{ns}.svc.cluster.local",
                           {"NAMESPACE": ns, "LABELS": labels or {"app": "client"}})


# pa: namespace a, imports its own namespace and one host of b. pb: namespace b, the default `*/*`.
# pc: namespace c, its own namespace only (c has no service: it imports nothing).
PROXIES = {"pa": node("a"), "pb": node("b"), "pc": node("c")}


def base_store() -> Store:
    store = Store()
    store.replace("svc", [service("web", "a"), service("db", "b"), service("cache", "b"),
                          service("redis", "b", port=6379)])
    # pa serves web, pb serves db: their inbound side reads DestinationRules too (connectionPool).
    store.replace("pods", [pod("p1", "a", "web", PROXIES["pa"].ip), pod("p1", "b", "db", PROXIES["pb"].ip)])
    store.replace("sidecars", [sidecar("a", '"./*", "b/db.b.svc.cluster.local"'), sidecar("c", '"./*"')])
    return store


class Harness:
    def __init__(self, *objects: Any) -> None:
        self.store = base_store()
        for obj in objects:
            self.store.upsert(str(obj.ref), obj)
        self.memo = Memo()
        self.index = ProxyDependencies()
        self.generation = -1
        self.last = ""
        self.held: dict[str, Any] = {}
        self.push()

    def push(self) -> set[str] | None:
        """What the planner does: which proxies the changes since the last push reach; only those
        are translated again, each from its last result (push/planner.py)."""
        view = self.store.view()
        reached: set[str] | None = None
        if self.generation >= 0:
            changes = view.changes_since(self.generation)
            assert changes is not None
            reached = self.index.reached(changes, view.mesh.root_namespace, view)
            self.index.settle(self.generation)
        self.memo.rotate()
        for key, proxy in PROXIES.items():
            if reached is None or key in reached:
                result = generate(view, proxy, self.memo, self.index.previous(key, view))
                self.index.put(key, result)
                self.held[key] = result.snapshot
        self.generation = view.generation
        return reached

    def change(self, obj: Any) -> set[str] | None:
        self.store.upsert(str(obj.ref), obj)
        self.last = f"{obj.ref}: {obj.spec}"
        return self.push()

    def delete(self, kind: str, ns: str, name: str) -> set[str] | None:
        ref = ObjectRef(kind, ns, name)
        self.store.delete(str(ref), ref)
        self.last = f"deleted {ref}"
        return self.push()


ALL = {"pa", "pb", "pc"}


@pytest.mark.parametrize(("case", "before", "change", "reached"), [
    ("VirtualService of a for a's host: a imports ./*, b `*/*`",
     (), vs("r", "a", "web.a.svc.cluster.local"), {"pa", "pb"}),
    ("short host names resolve in the VirtualService's namespace",
     (), vs("r", "a", "web"), {"pa", "pb"}),
    ("VirtualService of b for an exact import of a's Sidecar",
     (), vs("r", "b", "db.b.svc.cluster.local"), {"pa", "pb"}),
    ("VirtualService of b for a host a does not import",
     (), vs("r", "b", "cache.b.svc.cluster.local"), {"pb"}),
    ("VirtualService of c: `c/*` imports every VirtualService of c, whatever its host",
     (), vs("r", "c", "web.a.svc.cluster.local"), {"pb", "pc"}),
    ("a wildcard VirtualService host may match any exact import",
     (), vs("r", "b", '"*.b.svc.cluster.local"', dest="db.b.svc.cluster.local"), ALL),
    ("a gateway-only VirtualService is never a sidecar's",
     (), vs("r", "a", "web", gateways="gw"), set()),
    ("a delegate reaches the proxies of the roots that name it",
     (vs("root", "a", "web", delegate="leaf"),), vs("leaf", "a", "", dest="web.a.svc.cluster.local"),
     {"pa", "pb"}),
    ("DestinationRule of a for a's host: a's proxies, and scopes importing it from a",
     (), dr("d", "a", "web"), {"pa", "pb"}),
    ("DestinationRule of c for a's host: on the lookup path of c's proxies only (it would shadow a's)",
     (), dr("d", "c", "web.a.svc.cluster.local"), {"pc"}),
    ("DestinationRule of the root namespace: every scope importing the host",
     (), dr("d", ROOT, "web.a.svc.cluster.local"), {"pa", "pb"}),
    ("DestinationRule of b for a host no scope imports from b",
     (), dr("d", "b", "cache.b.svc.cluster.local"), {"pa", "pb"}),  # b's proxies; pa imports from b
    ("selector DestinationRule: its namespace",
     (), dr("d", "b", "web.a.svc.cluster.local", selector="app: client"), {"pb"}),
])
def test_change_reaches(case: str, before: tuple[Any, ...], change: Any, reached: set[str]) -> None:
    h = Harness(*before)
    assert h.change(change) == reached


def test_previous_scope_keeps_reaching_until_the_change_is_pushed() -> None:
    h = Harness(vs("r", "b", "db.b.svc.cluster.local"))
    # The host moves to one pa does not import: pa selected it before, so it is reached (to lose it).
    assert h.change(vs("r", "b", "cache.b.svc.cluster.local")) == {"pa", "pb"}
    assert h.change(vs("r", "b", "cache.b.svc.cluster.local", dest="db.b.svc.cluster.local")) == {"pb"}
    assert h.delete(Kind.VIRTUAL_SERVICE, "b", "r") == {"pb"}


def test_deleted_destination_rule_reaches_those_that_resolved_it() -> None:
    # b's DestinationRule for a's host shadows a's own for b's proxies (the first lookup step).
    h = Harness(dr("d", "b", "web.a.svc.cluster.local"), dr("w", "a", "web"))
    assert h.delete(Kind.DESTINATION_RULE, "a", "w") == {"pa"}
    assert h.delete(Kind.DESTINATION_RULE, "b", "d") == {"pb"}


def test_a_missing_delegate_appearing_reaches_its_roots() -> None:
    h = Harness(vs("root", "b", "db.b.svc.cluster.local", delegate="leaf"))
    assert h.change(vs("leaf", "b", "", dest="db.b.svc.cluster.local")) == {"pa", "pb"}


def test_unchanged_rules_keep_the_scope() -> None:
    """A VirtualService change leaves the Scope of a namespace that does not select it as it was."""
    h = Harness(vs("r", "b", "db.b.svc.cluster.local"), dr("d", "b", "db.b.svc.cluster.local"))
    view = h.store.view()
    before = {k: _scope(view, p, h.memo) for k, p in PROXIES.items()}
    h.change(vs("other", "b", "cache.b.svc.cluster.local"))
    view = h.store.view()
    after = {k: _scope(view, p, h.memo) for k, p in PROXIES.items()}
    assert after["pa"] is before["pa"] and after["pc"] is before["pc"]
    assert after["pb"] is not before["pb"]


# ------------------------------------------------------------------ property
def _scope(view: StoreView, proxy: Any, memo: Memo) -> Scope:
    workload = workload_of(view, proxy)
    return scope_for(view, proxy.namespace, sidecar_for(view, workload), memo)


def _reads(view: StoreView, proxy: Any) -> Any:
    """What a proxy's outbound config reads of the rules, as comparable values, from scratch."""
    memo = Memo()
    workload = workload_of(view, proxy)
    scope = scope_for(view, proxy.namespace, sidecar_for(view, workload), memo)
    traits: ProxyTraits = traits_of(workload, traffic_rules(view, memo).label_keys)
    selected = tuple(tuple((vs.ref, vs.spec.SerializeToString(deterministic=True)) for vs in e.virtual_services)
                     for e in scope.egress)
    hosts = {s.hostname: s.namespace for s in scope.services}
    for e in scope.egress:  # route destinations are looked up too
        for vs in e.virtual_services:
            for host in destination_hosts(vs.spec):
                found = scope.service(host)
                hosts.setdefault(host, found.namespace if found is not None else "")
    rules = {}
    for host, ns in sorted(hosts.items()):
        rule = scope.destination_rule(host, ns, traits)
        rules[host] = None if rule is None else (rule.sources, rule.spec.SerializeToString(deterministic=True))
    return selected, rules


HOSTS = ("web", "web.a.svc.cluster.local", "db.b.svc.cluster.local", "cache.b.svc.cluster.local",
         '"*.b.svc.cluster.local"', "redis.b.svc.cluster.local")
SPACES = ("a", "b", "c", ROOT)


def _random_rule(rng: random.Random) -> Any:
    ns, name = rng.choice(SPACES), rng.choice(("r1", "r2", "leaf"))
    if rng.random() < 0.5:
        export = rng.choice(("", '"."', '"*"', '"a"'))
        if name == "leaf":
            return vs(name, ns, "", dest=rng.choice(HOSTS[1:4]), export_to=export)
        if rng.random() < 0.3:
            return vs(name, ns, rng.choice(HOSTS), delegate="leaf", created=rng.randrange(9))
        if rng.random() < 0.25:
            return vs(name, ns, "redis.b.svc.cluster.local", dest=rng.choice(("redis.b.svc.cluster.local", "db.b")),
                      export_to=export, tcp=True, created=rng.randrange(9))
        return vs(name, ns, rng.choice(HOSTS), dest=rng.choice(HOSTS[1:4]), export_to=export,
                  gateways=rng.choice(("", "", "mesh", "gw")), created=rng.randrange(9))
    host = rng.choice((*HOSTS[:4], "'*.local'", "redis.b.svc.cluster.local"))
    selector = rng.choice(("", "", "app: client"))
    export = "" if selector else rng.choice(("", '"."', '"*"'))
    return dr(name, ns, host, selector=selector, export_to=export, created=rng.randrange(9),
              subset=rng.choice(("v1", "v2")), pool=rng.choice((0, 0, 10, 20)))


@pytest.mark.parametrize("serving_only", [False, True], ids=["imports-own", "serves-without-importing"])
@pytest.mark.parametrize("seed", range(12))
def test_every_proxy_whose_rules_changed_is_reached(seed: int, serving_only: bool) -> None:
    rng = random.Random(seed)
    # serving_only: pb serves db but imports nothing; only its inbound side reads the rules.
    h = Harness(*((sidecar("b", '"c/*"'),) if serving_only else ()))
    reads = {k: _reads(h.store.view(), p) for k, p in PROXIES.items()}
    scopes = {k: _scope(h.store.view(), p, h.memo) for k, p in PROXIES.items()}
    had_rules = False
    for _ in range(40):
        if rng.random() < 0.2:
            held = [o.ref for _, o in h.store.objects() if o.kind in (Kind.VIRTUAL_SERVICE, Kind.DESTINATION_RULE)]
            if held:
                ref = rng.choice(held)
                reached = h.delete(ref.kind, ref.namespace, ref.name)
            else:
                reached = h.change(_random_rule(rng))
        else:
            reached = h.change(_random_rule(rng))
        assert reached is not None
        view = h.store.view()
        now = {k: _reads(view, p) for k, p in PROXIES.items()}
        changed = {k for k in PROXIES if now[k] != reads[k]}
        assert changed <= reached, f"not reached: {sorted(changed - reached)} by {h.last}"
        # What each proxy holds (translated incrementally when reached, else kept) is what a
        # translation from scratch gives.
        for k, p in PROXIES.items():
            assert contents(h.held[k]) == contents(generate(view, p, Memo()).snapshot), f"{k} after {h.last}"
        now_scopes = {k: _scope(view, p, h.memo) for k, p in PROXIES.items()}
        kept = {k for k in PROXIES if now_scopes[k] is scopes[k]}
        # A VirtualService change leaves every scope it does not reach as it was. (Scopes are keyed
        # by the DestinationRules of the namespaces their lookups reach, not by host: a rule change
        # may give a scope it does not reach a new Scope of the same content.)
        if had_rules and (view.virtual_services or view.destination_rules) and "VirtualService" in h.last:
            assert set(PROXIES) - reached <= kept, f"scope rebuilt though not reached, by {h.last}"
        had_rules = bool(view.virtual_services or view.destination_rules)
        reads, scopes = now, now_scopes


UNLIMITED = 2**32 - 1  # istiod's inbound default without a pool (networking/core/cluster_traffic_policy.go)


@pytest.mark.parametrize("change", ["host", "delete"])
def test_a_root_rule_leaving_a_host_reaches_the_proxies_serving_it(change: str) -> None:
    """pb serves db but imports nothing (c has no service): its inbound cluster still takes the root rule's
    connectionPool for db (translate/inbound.py). When the rule leaves db (another host, or
    deleted), pb must be reached to lose it, though no scope of its imports ever read the rule."""
    h = Harness(sidecar("b", '"c/*"'), dr("d", ROOT, "db.b.svc.cluster.local", pool=7))
    assert _inbound_max_connections(h.held["pb"]) == [7], "the root rule's pool is on pb's inbound cluster"
    if change == "host":
        reached = h.change(dr("d", ROOT, "web.a.svc.cluster.local", pool=7))  # served in a only
    else:
        reached = h.delete(Kind.DESTINATION_RULE, ROOT, "d")
    assert reached is not None and "pb" in reached
    view = h.store.view()
    assert contents(h.held["pb"]) == contents(generate(view, PROXIES["pb"], Memo()).snapshot)
    assert _inbound_max_connections(h.held["pb"]) == [UNLIMITED]


def _inbound_max_connections(snapshot: Any) -> list[int]:
    """maxConnections of the default-priority circuit breaker of each inbound cluster."""
    out = []
    for name, built in snapshot.get(TypeUrl.CLUSTER).items():
        if name.startswith("inbound|"):
            cluster = Cluster.FromString(built.payload)
            thresholds = cluster.circuit_breakers.thresholds
            out.append(thresholds[0].max_connections.value)
    return out
