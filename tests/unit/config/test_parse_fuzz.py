"""Fuzz parse() with valid manifests mutated at random, and with random documents.

Whatever comes in: no exception escapes, no internal error is swallowed as a Problem, errors and
the returned object agree, and every rejection of a named object names it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds_server.config.parse import ISTIO_GROUP, ISTIO_VERSIONS, parse

MANIFESTS = Path(__file__).parents[2] / "fixtures" / "manifests"
EXTRA = """
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns, labels: {app: a}}
spec: {serviceAccountName: sa, containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {selector: {app: a}, ports: [{name: http, port: 80, targetPort: http}, {name: tcp, port: 81}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static, namespace: ns}
spec:
  hosts: [db.example.com]
  addresses: [10.1.0.0/16]
  ports: [{number: 5432, name: tcp-db, protocol: TCP, targetPort: 6432}]
  resolution: STATIC
  exportTo: [".", other]
  endpoints: [{address: 10.1.0.5, ports: {tcp-db: 7000}, labels: {a: b}, weight: 2}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: full, namespace: ns}
spec:
  workloadSelector: {labels: {app: a}}
  outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy.example.com, port: {number: 3128}}}
  inboundConnectionPool: {tcp: {connectTimeout: 1s, tcpKeepalive: {time: 10s}}}
  egress: [{port: {number: 0, protocol: HTTP}, bind: "unix:///a.sock", hosts: ["*/*"]}]
"""


def _bases() -> list[dict[str, Any]]:
    texts = [p.read_text() for p in sorted(MANIFESTS.glob("*/**/*.yaml")) if p.name != "not-yaml.yaml"]
    return [d for text in [*texts, EXTRA] for d in yaml.safe_load_all(text) if isinstance(d, dict)]


BASES = _bases()
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "*",
            "*/*",
            "~/*",
            "./*",
            "a/b",
            "ns/*.x.com",
            "unix://",
            "unix:///a.sock",
            "10.0.0.1",
            "::1",
            "127.0.0.1:80",
            "[::1]:80",
            "HTTP",
            "TCP",
            "NONE",
            "DNS",
            "STATIC",
            "1s",
            "-1s",
            "0",
            "v1",
            "\ud800",
        ]
    ),
    st.sampled_from([0, -1, 65535, 65536, 2**32, 2**63]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | SCALARS, inner, max_size=3)
    ),
    max_leaves=6,
)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) pair in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _slots(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield node, i
            yield from _slots(value)


def _retype(value: Any) -> Any:
    match value:
        case bool():
            return str(value).lower()
        case int():
            return str(value)
        case str():
            return len(value)
        case list():
            return {str(i): v for i, v in enumerate(value)}
        case dict():
            return list(value.values())
        case _:
            return {}


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        slots = list(_slots(doc))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["delete", "replace", "retype", "rename", "insert", "duplicate"]))
        if op == "delete":
            del container[key]
        elif op == "replace":
            container[key] = draw(VALUES)
        elif op == "retype":
            container[key] = _retype(container[key])
        elif op == "rename" and isinstance(container, dict):
            container[f"{key}x"] = container.pop(key)
        elif op == "insert" and isinstance(container[key], dict):
            container[key][draw(st.text(max_size=8))] = draw(VALUES)
        elif op == "duplicate" and isinstance(container[key], list) and container[key]:
            container[key].append(copy.deepcopy(container[key][0]))
    return doc


def _names_object(doc: Any) -> bool:
    """A document of a kind parse() reads, with a usable metadata.name."""
    if not isinstance(doc, Mapping):
        return False
    api, kind, meta = doc.get("apiVersion"), doc.get("kind"), doc.get("metadata")
    if not isinstance(api, str) or not isinstance(kind, str) or not isinstance(meta, Mapping):
        return False
    name = meta.get("name")
    group, _, version = api.rpartition("/")
    readable = (
        group == ISTIO_GROUP and version in ISTIO_VERSIONS and kind in ("Sidecar", "ServiceEntry")
    ) or (api == "v1" and kind in ("Pod", "Service", "Namespace"))
    return readable and isinstance(name, str) and name != ""


def _check(doc: Any) -> None:
    obj, problems = parse(doc, "fuzz.yaml:0")
    errors = [p for p in problems if not p.warning]
    assert all(not p.message.startswith("document: could not be parsed") for p in problems), problems
    assert all(p.message and p.where == "fuzz.yaml:0" for p in problems)
    if obj is not None:
        assert errors == []
        hash(obj.ref)
    if _names_object(doc):
        assert all(p.ref is not None for p in errors), errors
        if obj is not None:
            assert obj.ref.name == doc["metadata"]["name"]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_manifests())
def test_mutated_manifests_never_break_parse(doc: Any) -> None:
    _check(doc)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(["v1", "networking.istio.io/v1", "networking.istio.io/v1alpha3"]),
            "kind": st.sampled_from(["Sidecar", "ServiceEntry", "Pod", "Service", "Namespace", "ConfigMap"]),
            "metadata": st.fixed_dictionaries({"name": st.sampled_from(["x", "istio"]), "namespace": VALUES}),
        },
        optional={"spec": VALUES, "status": VALUES, "data": VALUES},
    )
)
def test_random_documents_of_known_kinds_never_break_parse(doc: Any) -> None:
    _check(doc)


def test_bases_are_all_parsed_clean_or_deliberately_ignored() -> None:
    for doc in BASES:
        if "kind" not in doc:
            continue  # the bare --mesh-config document
        _obj, problems = parse(doc)
        assert all(p.warning for p in problems) or doc["metadata"]["name"] in (
            "typo",
            "bad-ingress",
            "no-ip-tables",
            "wildcard-dns",
        ), (doc, problems)
