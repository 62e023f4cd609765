"""Running the Kubernetes source into a real Store, for tests against the real apiserver (and the
few left on the protocol double): manifests, a `running` context and a polling `eventually`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xds_server.sources.kubernetes import KubernetesSource
from xds_server.store.store import Store

DEADLINE = 15.0  # generous: every wait polls and returns as soon as its condition holds


# ---------------------------------------------------------------- manifests
def pod(name: str, ns: str = "default", ip: str = "10.0.0.1", **labels: str) -> dict[str, Any]:
    """A Pod with its status (the double stores it as given; on the real server, `status` is
    ignored on create and written with EnvTest.set_pod_status)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": "True"}]},
    }


def service(name: str, ns: str = "default", cluster_ip: str | None = None, **selector: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector or {"app": name},
                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def sidecar(name: str, ns: str = "default", hosts: tuple[str, ...] = ("./*",)) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"egress": [{"hosts": list(hosts)}]},
    }


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


# ---------------------------------------------------------------- running the source
@dataclass
class Running:
    source: KubernetesSource
    store: Store
    task: asyncio.Task[None]

    def names(self, kind: str, ns: str | None = None) -> set[str]:
        """`Kind/ns/name` of the stored objects of a kind (in one namespace when given)."""
        return {str(obj.ref) for _, obj in self.store.objects()
                if obj.ref.kind == kind and (ns is None or obj.ref.namespace == ns)}

    def rv(self, origin: str) -> str:
        return self.source.resource_versions[origin]

    def lists(self, origin: str) -> int:
        return self.source.request_counts[origin][0]

    def watches(self, origin: str) -> int:
        return self.source.request_counts[origin][1]


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
    """The source running into a fresh Store until the block ends; no reflector thread may
    outlive it."""
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
