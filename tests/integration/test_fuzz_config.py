"""Fuzzed manifests and watch events, through parse, the store and the translator.

Whatever the input: nothing raises, nothing is logged at error level, the translator's output is
consistent (a snapshot the planner would publish), and every rejected object is counted in the
metrics. The last test does it live: a running server with the file source, a connected proxy,
fuzzed files written while it is served.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.ads_client import AdsClient, node, until
from tests.unit.config.test_parse_fuzz import BASES, VALUES, _retype, _slots, mutated_manifests
from xds_server.admin.metrics import Metrics
from xds_server.app import App
from xds_server.config.parse import parse
from xds_server.resources import TypeUrl
from xds_server.settings import Settings
from xds_server.sources.files import FileSource, parse_text
from xds_server.sources.kube_reflector import ReflectorState
from xds_server.sources.kubernetes import _apply
from xds_server.store import Store
from xds_server.translate import Memo, generate, proxy_from_node

DEMO = Path(__file__).parents[2] / "xds_server" / "commands" / "demo_mesh"
WORLD = [d for p in sorted(DEMO.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]
PROXIES = [
    proxy_from_node("sidecar~127.0.1.1~frontend-1.shop~shop.svc.cluster.local"),
    proxy_from_node("sidecar~127.0.1.3~payments-1.payments~payments.svc.cluster.local",
                    {"INTERCEPTION_MODE": "NONE"}),
    proxy_from_node("sidecar~10.0.0.1~p.ns~ns.svc.cluster.local"),
    proxy_from_node("unknown-proxy"),
]
FUZZ = settings(max_examples=int(os.environ.get("XDS_FUZZ_EXAMPLES", 120)), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def rejected_count(metrics: Metrics) -> float:
    return sum(s.value for f in metrics.config_rejected.collect() for s in f.samples)


def error_problems(store: Store) -> int:
    """Rejections held now: per origin (two files holding one bad object are two rejections)."""
    return sum(len({(p.ref.kind if p.ref else "unknown", str(p.ref or ""), p.message) for p in problems
                    if not p.warning}) for problems in store.problems.values())


def translate_all(store: Store) -> None:
    view, memo = store.view(), Memo()
    for proxy in PROXIES:
        snap = generate(view, proxy, memo).snapshot
        assert snap.dangling() == [], (proxy.node_id, snap.dangling())


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@FUZZ
@given(st.lists(mutated_manifests(), min_size=1, max_size=3))
def test_fuzzed_manifests_through_store_and_translator(caplog: pytest.LogCaptureFixture, docs: list[Any]) -> None:
    store = Store()
    metrics = Metrics(store)
    store.subscribe_reports(metrics.problems_reported)
    objects, problems = [], []
    for i, doc in enumerate([*WORLD, *docs]):
        obj, found = parse(doc, f"fuzz.yaml:{i}")
        problems += found
        if obj is not None:
            objects.append(obj)
    store.replace("fuzz.yaml", objects)
    store.report("fuzz.yaml", problems)
    translate_all(store)
    assert rejected_count(metrics) == error_problems(store)
    no_errors(caplog)


TEXT_PIECES = st.sampled_from(["---\n", "apiVersion: v1\n", "kind: Pod\n", "metadata: {name: x}\n", "{", "]",
                               "- a\n", ": :\n", "\t", "items: [1, 2]\n", "kind: List\n", "&a [*a]\n", "!!python/x\n",
                               "\ufeff", "\x00", "%YAML 9.9\n", "a: !!binary zz\n", "'" * 3])


@FUZZ
@given(st.lists(st.one_of(TEXT_PIECES, st.text(max_size=20)), max_size=12))
def test_fuzzed_manifest_text_never_breaks_the_file_loader(caplog: pytest.LogCaptureFixture,
                                                          pieces: list[str]) -> None:
    loaded = parse_text("fuzz.yaml", "".join(pieces))
    assert all(p.message for p in loaded.problems)
    store = Store()
    store.replace("fuzz.yaml", loaded.objects)
    translate_all(store)
    no_errors(caplog)


KINDS = [("Pod", "v1"), ("Service", "v1"), ("Sidecar", "networking.istio.io/v1"),
         ("ServiceEntry", "networking.istio.io/v1"), ("ConfigMap", "v1"), ("Namespace", "v1")]
ITEMS = st.one_of(mutated_manifests(), st.sampled_from(BASES), st.sampled_from(WORLD), VALUES)
EVENT = st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", "weird"]), ITEMS,
                  st.sampled_from(range(len(KINDS))), st.text(max_size=3))


@FUZZ
@given(st.lists(st.one_of(EVENT, st.tuples(st.just("LIST"), st.lists(ITEMS, max_size=4),
                                           st.sampled_from(range(len(KINDS))), st.text(max_size=3))),
                max_size=15))
def test_fuzzed_watch_events_never_break_the_store_or_translator(caplog: pytest.LogCaptureFixture,
                                                                 events: list[Any]) -> None:
    store = Store()
    metrics = Metrics(store)
    store.subscribe(metrics.store_changed)
    store.subscribe_reports(metrics.problems_reported)
    reflectors = {kind: ReflectorState(f"kubernetes/{kind}/*", kind, api) for kind, api in KINDS}
    for type_, item, kind_index, rv in events:
        state = reflectors[KINDS[kind_index][0]]
        if isinstance(item, dict) and rv:
            item = copy.deepcopy(item)
            meta = item.get("metadata")
            if isinstance(meta, dict):
                meta["resourceVersion"] = rv
        ops = state.listed(item, rv) if type_ == "LIST" else state.event(type_, item)
        for op in ops:
            _apply(store, op)
        translate_all(store)
    assert rejected_count(metrics) == error_problems(store)
    no_errors(caplog)


# ------------------------------------------------------------------ live
def mutate(rng: random.Random, doc: dict[str, Any]) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randrange(1, 4)):
        slots = list(_slots(doc))
        if not slots:
            break
        container, key = rng.choice(slots)
        op = rng.choice(["delete", "retype", "garbage", "dup"])
        if op == "delete":
            del container[key]
        elif op == "retype":
            container[key] = _retype(container[key])
        elif op == "garbage":
            container[key] = rng.choice([None, -1, "*", "::1", "1s", {"x": []}, [None], 2**64, "unix://", ""])
        elif isinstance(container[key], list) and container[key]:
            container[key].append(copy.deepcopy(container[key][0]))
    return doc


async def test_fuzzed_files_while_serving_keep_the_proxy_served_and_count_every_rejection(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "config"
    config.mkdir()
    for p in sorted(DEMO.glob("*.yaml")):
        (config / p.name).write_text(p.read_text())
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=-1, drain_seconds=0, debounce_quiet=0.02,
                       debounce_max=0.1), sources=[FileSource(config, debounce=0.01)])
    await app.start()
    await until(app.ready, what="ready")
    client = AdsClient(f"127.0.0.1:{app.xds_port}")  # the stream starts here: after the sources synced
    try:
        client.send(node=node(PROXIES[0].node_id), type_url=TypeUrl.CLUSTER.value)
        latest = [await client.recv()]

        async def follow() -> None:
            while True:
                resp = await client.recv(timeout=60)
                client.send(type_url=TypeUrl.CLUSTER.value, version_info=resp.version_info, response_nonce=resp.nonce)
                latest.append(resp)

        follower = asyncio.create_task(follow())
        rng = random.Random(9)
        for round_ in range(15):
            docs = [mutate(rng, rng.choice(WORLD + BASES)) for _ in range(rng.randrange(1, 4))]
            text = yaml.safe_dump_all(docs) if rng.random() < 0.8 else yaml.safe_dump_all(docs)[:-7] + "\n: {["
            (config / f"fuzz-{round_ % 4}.yaml").write_text(text)
            await asyncio.sleep(0.08)
            assert not follower.done(), follower
        await asyncio.sleep(0.3)
        assert len(app.services.connections) == 1 and not follower.done()
        # Converged: the proxy holds what the server holds for it now.
        await until(lambda: latest[-1].version_info == app.cache.get(PROXIES[0].key).version(TypeUrl.CLUSTER),
                    timeout=5, what="the proxy converged on the current config")
        assert rejected_count(app.metrics) == error_problems(app.store) > 0
        follower.cancel()
    finally:
        await client.close()
        await app.stop(0)
    no_errors(caplog)
