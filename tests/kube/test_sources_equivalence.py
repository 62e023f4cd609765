"""The same manifests given as files and as Kubernetes objects in a real apiserver yield
byte-identical Envoy resources for the same proxy (both sources feed the same store shape).

Each golden case's objects are created through the API (Pods without a kubelet get the status
the case gives through the status subresource; containers get an image, which the API requires
and the translator ignores); the file source then reads exactly what the server stored, as
`kubectl get -o yaml` gives it (the server stamps creationTimestamp, which Istio's "oldest wins"
reads), every object of the case's namespaces, those the apiserver made itself included (Service
`kubernetes` in `default`, the Namespace objects). The Kubernetes source watches those namespaces
only: the apiserver is shared with the rest of the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.golden.harness import Case, cases
from tests.kube.envtest import ApiError, EnvTest, object_path
from tests.support.ads_client import until
from xds_server.commands.render import proxy_for
from xds_server.resources import PUSH_ORDER
from xds_server.sources.files import FileSource
from xds_server.sources.kube_kinds import DESTINATION_RULE, POD, SERVICE, SERVICE_ENTRY, SIDECAR, VIRTUAL_SERVICE
from xds_server.sources.kubernetes import KubernetesSource
from xds_server.store import Store
from xds_server.translate import Memo, generate

# Cases with a --mesh-config file are left out: that flag has no Kubernetes twin (the ConfigMap is
# covered by the kube source tests).
CASES = [c for c in cases() if c.mesh_config is None]
KEPT_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease", "xds-system"}


async def _load(source: Any, store: Store) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(store, stop))
    try:
        await until(lambda: store.synced(source.name), timeout=20, what=f"{source.name} synced")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@contextlib.contextmanager
def created(kube_api: EnvTest, docs: list[dict[str, Any]]) -> Iterator[None]:
    """The case's objects in the apiserver (as stored), removed again afterwards."""
    namespaces = {d["metadata"].get("namespace") or "default" for d in docs if d["kind"] != "Namespace"}
    namespaces |= {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    made: list[dict[str, Any]] = []
    try:
        for ns in sorted(namespaces):
            kube_api.ensure_namespace(ns)
        for doc in docs:
            made.append(create(kube_api, doc))
        yield
    finally:
        for obj in reversed(made):
            if obj["kind"] != "Namespace":
                with contextlib.suppress(ApiError):
                    kube_api.request("DELETE", object_path(obj) + "?gracePeriodSeconds=0")
        for ns in sorted(namespaces - KEPT_NAMESPACES):
            kube_api.delete_namespace(ns)


def create(kube_api: EnvTest, doc: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(doc)
    body["metadata"].pop("creationTimestamp", None)
    status = body.pop("status", None) if body["kind"] == "Pod" else None
    if body["kind"] == "Pod":
        for container in body["spec"].get("containers", ()):
            container.setdefault("image", "app")
    # A Namespace may already exist (ensure_namespace made it, with the ServiceAccount Pods need).
    stored = kube_api.apply(body) if body["kind"] == "Namespace" else kube_api.create(body)
    if status:
        stored = kube_api.request("PATCH", object_path(stored) + "/status", {"status": status},
                                  content_type="application/merge-patch+json")
    stored.setdefault("apiVersion", body["apiVersion"])
    stored.setdefault("kind", body["kind"])
    return stored


def dump(kube_api: EnvTest, namespaces: list[str]) -> list[dict[str, Any]]:
    """What `kubectl get -o yaml` gives for every kind the source watches in these namespaces."""
    out: list[dict[str, Any]] = []
    for ns in namespaces:
        for spec in (POD, SERVICE, SIDECAR, SERVICE_ENTRY, VIRTUAL_SERVICE, DESTINATION_RULE):
            prefix = f"/apis/{spec.group}/{spec.versions[0]}" if spec.group else f"/api/{spec.versions[0]}"
            items = kube_api.request("GET", f"{prefix}/namespaces/{ns}/{spec.plural}")["items"]
            out += [{"apiVersion": spec.api_version(spec.versions[0]), "kind": spec.kind, **item} for item in items]
        with contextlib.suppress(ApiError):
            out.append({"apiVersion": "v1", "kind": "Namespace", **kube_api.request("GET", f"/api/v1/namespaces/{ns}")})
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_files_and_kubernetes_give_identical_envoy_resources(
    case: Case, kube_api: EnvTest, istio_crds: list[str], tmp_path: Path
) -> None:
    docs = [d for f in sorted((case.path / "input").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    file_store, kube_store = Store(), Store()
    namespaces = sorted({d["metadata"].get("namespace") or d["metadata"]["name"] for d in docs} | {"istio-system"})
    with created(kube_api, docs):
        files = tmp_path / "files"
        files.mkdir()
        (files / "objects.yaml").write_text(yaml.safe_dump_all(dump(kube_api, namespaces)))
        await _load(FileSource(str(files)), file_store)
        source = KubernetesSource(kube_api.kubeconfig(), namespaces=namespaces, backoff_base=0.05, watch_timeout=5)
        await _load(source, kube_store)

    def render(store: Store) -> dict[str, dict[str, bytes]]:
        view = store.view()
        snap = generate(view, proxy_for(view, case.proxy, case.metadata), Memo()).snapshot
        return {t.value: {n: b.payload for n, b in snap.get(t).items()} for t in PUSH_ORDER}

    from_files, from_kube = render(file_store), render(kube_store)
    assert sum(len(v) for v in from_files.values()) > 0
    assert from_files == from_kube
