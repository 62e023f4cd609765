"""`--mesh-config FILE` is read once at startup: the Kubernetes source's root namespace, the CSDS
scope and the store's MeshConfig all come from the same read."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.app import App, ConfigError
from xds_server.settings import Settings


async def test_mesh_config_file_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("rootNamespace: istio-config\n")
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=-1, mesh_config=str(path)), sources=[])
    assert app._root_namespace() == "istio-config"  # what the Kubernetes source is given
    path.write_text("rootNamespace: [not, a, namespace\n")  # a later read would fail
    await app.start()
    try:
        assert app.store.view().mesh.root_namespace == "istio-config"
    finally:
        await app.stop(0)


async def test_unreadable_mesh_config_file_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=-1, mesh_config=str(missing)), sources=[])
    assert app._root_namespace() == "istio-system"  # the default until start reports the problem
    with pytest.raises(ConfigError, match=r"--mesh-config .*absent.yaml: No such file or directory"):
        await app.start()
    await app.stop(0)
