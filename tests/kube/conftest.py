"""Fixtures of the tests against the real apiserver (kube_api itself is in tests/kube/plugin.py)."""

from __future__ import annotations

import pytest

from tests.kube.deployed import apply_deploy
from tests.kube.envtest import EnvTest


@pytest.fixture(scope="session")
def deployed(kube_api: EnvTest) -> str:
    """deploy/ applied; a token of its ServiceAccount. deploy/ stays applied for the rest of the
    session (deleting a namespace needs the controller-manager this apiserver runs without);
    applying it again is a no-op."""
    return apply_deploy(kube_api)
