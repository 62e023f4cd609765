"""Issue 2, item 5: the whole pipeline with a real Envoy, SotW and delta.

Service and Pod manifests in a --config-dir -> file source -> store -> translator -> ADS ->
Envoy; HTTP through Envoy's egress listener reaches a backend; a pod manifest added (or made
not ready) while running changes Envoy's endpoints within a deadline.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backend import get, http_backend
from tests.support.envoy import LocalEnvoy, free_port
from xds_server.app import App
from xds_server.settings import Settings

pytestmark = pytest.mark.envoy
CLUSTER = "outbound|{port}||web.default.svc.cluster.local"


def service(port: int, target: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: 10.96.0.10
  selector: {{app: web}}
  ports: [{{name: http-web, port: {port}, targetPort: {target}}}]
"""


def pod(name: str, ip: str, ready: bool = True) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}
spec: {{containers: [{{name: app, image: x}}]}}
status:
  podIP: {ip}
  conditions: [{{type: Ready, status: "{'True' if ready else 'False'}"}}]
"""


@pytest.fixture
async def config_dir() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.mark.parametrize("mode", ["sotw", "delta"])
async def test_manifests_to_envoy_traffic_and_live_endpoint_changes(config_dir: Path, mode: str) -> None:
    port = free_port()
    async with http_backend("web-1", "127.0.0.1") as target, http_backend("web-2", "127.0.0.2", target):
        # Both backends listen on their pod's container port: one number, two pod addresses.
        (config_dir / "svc.yaml").write_text(service(port, target))
        (config_dir / "web-1.yaml").write_text(pod("web-1", "127.0.0.1"))
        app = App(Settings(config_dir=str(config_dir), xds_host="127.0.0.1", xds_port=0, admin_port=-1,
                           debounce_quiet=0.05, drain_seconds=0))
        await app.start()
        envoy = LocalEnvoy("sidecar~127.0.0.9~client-1.default~default.svc.cluster.local", app.xds_port,
                           sotw=mode == "sotw", metadata={"INTERCEPTION_MODE": "NONE", "NAMESPACE": "default"})
        try:
            envoy.start()
            cluster = CLUSTER.format(port=port)
            await envoy.until(lambda: cluster in envoy.dynamic_names("clusters"), what="the service's cluster")
            await envoy.until(lambda: f"127.0.0.1_{port}" in envoy.dynamic_names("listeners"), what="listener")
            url = f"http://127.0.0.1:{port}/x"
            for host in ("web.default.svc.cluster.local", "web", "web.default", "10.96.0.10"):
                status, body = await get(url, host=host)
                assert status == 200 and json.loads(body)["name"] == "web-1", (host, status, body)

            def endpoints() -> list[str]:
                out = []
                for line in envoy.get("/clusters").splitlines():
                    if line.startswith(cluster + "::") and "::cx_active::" in line:
                        out.append(line.split("::")[1])
                return sorted(out)

            await envoy.until(lambda: endpoints() == [f"127.0.0.1:{target}"], what="one endpoint")
            # A second pod on another loopback address, same container port: picked up live.
            (config_dir / "web-2.yaml").write_text(pod("web-2", "127.0.0.2"))
            await envoy.until(lambda: endpoints() == [f"127.0.0.1:{target}", f"127.0.0.2:{target}"],
                              timeout=10, what="the new pod's endpoint")
            # The first pod turns not ready: it leaves the endpoints; traffic goes to web-2.
            (config_dir / "web-1.yaml").write_text(pod("web-1", "127.0.0.1", ready=False))
            await envoy.until(lambda: endpoints() == [f"127.0.0.2:{target}"], timeout=10, what="web-1 removed")
            status, body = await get(url, host="web")
            assert status == 200 and json.loads(body)["name"] == "web-2"
            assert envoy.rejected() == 0
        finally:
            envoy.stop()
            await app.stop(0)
