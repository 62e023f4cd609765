"""pytest plugin: the session's real kube-apiserver (`kube_api`) and a fresh namespace in it
(`kube_namespace`). Registered by the repository's root conftest.py, so every test under tests/
and e2e/ can ask for them. Tests that use them are skipped, with the reason, when
KUBEBUILDER_ASSETS does not name the envtest binaries; under CI=true that is an error instead,
so a broken CI setup cannot pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.envtest import EnvTest, missing_assets

ISTIO_CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"


@pytest.fixture(scope="session")
def kube_api() -> Iterator[EnvTest]:
    """etcd + kube-apiserver, started once per session on first use and stopped at its end."""
    reason = missing_assets()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with EnvTest() as env:
        yield env


@pytest.fixture
def kube_namespace(kube_api: EnvTest) -> Iterator[str]:
    """A namespace of its own (with its `default` ServiceAccount), deleted when the test ends."""
    name = kube_api.new_namespace("t")
    try:
        yield name
    finally:
        kube_api.delete_namespace(name)


@pytest.fixture
def istio_crds(kube_api: EnvTest) -> list[str]:
    """The Istio CRDs of deploy/crds, installed (again, if a test removed or changed one)."""
    return kube_api.install_crds(ISTIO_CRDS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "kube_api" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kube)
