"""A sidecar bootstrapped by `xds-server bootstrap` connects to `xds-server serve` over ADS.

Independent of what the translator produces: the stream is up, the proxy is LIVE, nothing is
NACKed, and the server sees the proxy.
"""

from __future__ import annotations

import pytest

from e2e.harness import Mesh


@pytest.mark.parametrize("sotw", [False, True], ids=["delta", "sotw"])
def test_sidecar_connects_over_ads(xds_mesh: Mesh, sotw: bool) -> None:
    name = "sotw" if sotw else "delta"
    p = xds_mesh.add_pod(name, labels={"app": name})
    try:
        envoy = xds_mesh.inject(p, interception="NONE", sotw=sotw)
        assert envoy.stat("control_plane.connected_state") == 1
        assert envoy.rejected_updates() == {}
    finally:
        xds_mesh.remove_pod(p)
