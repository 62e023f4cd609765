"""Workloads from the API server, as in a kind cluster: Deployments sent through `xds-server inject`,
expanded into Pods by the harness controllers, each Pod run with the injected istio-init and Envoy,
its podIP and readiness written back; the server (`serve --kubeconfig`, the deploy/ ServiceAccount)
turns them into endpoints. Scaling and deleting Pods add and remove endpoints while a request loop
on an already configured client sees no failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.harness import Envoy, Pod, RequestLoop, wait_for
from e2e.harness.kubeapi import Ref
from e2e.harness.kubemesh import KubeMesh

WEB = {"app": "web"}
WEB_HOST = "web.default.svc.cluster.local"
CLUSTER = f"outbound|8080||{WEB_HOST}"
CONVERGE = 15.0


@pytest.fixture(scope="module")
def mesh(kube_mesh: KubeMesh) -> KubeMesh:
    kube_mesh.start_server()
    kube_mesh.service("web", ports=[8080])
    kube_mesh.deployment("web", replicas=2, labels=WEB)
    kube_mesh.deployment("client", replicas=1, labels={"app": "client"}, ports=())
    return kube_mesh


@pytest.fixture(scope="module")
def client(mesh: KubeMesh) -> Pod:
    [pod] = mesh.wait_ready_pods({"app": "client"}, 1)
    return pod


def client_envoy(client: Pod) -> Envoy:
    assert client.envoy is not None
    return client.envoy


def web_ips(mesh: KubeMesh, count: int) -> set[str]:
    return {f"{p.ip}:8080" for p in mesh.wait_ready_pods(WEB, count)}


@pytest.fixture
def loop(client: Pod, mesh: KubeMesh) -> Iterator[RequestLoop]:
    """Requests to web all along the test: every one must be answered 200 by a web pod."""
    web_ips(mesh, 2)
    client_envoy(client).wait_endpoints(CLUSTER, web_ips(mesh, 2), timeout=CONVERGE)
    loop = client.request_loop("web", f"http://{WEB_HOST}:8080/loop", expect_pod=set())
    loop.wait_more(3)
    yield loop
    loop.wait_more(3)
    results = loop.stop()
    failed = [r for r in results if r.status != 200 or not (r.by or "").startswith("web-")]
    assert failed == [], f"{len(failed)} of {len(results)} requests to web failed: {failed[:5]}"
    assert mesh.rejected_updates() == {}


def test_deployment_pods_run_injected_and_serve(mesh: KubeMesh, client: Pod) -> None:
    """The Pods of an injected Deployment exist in the API, Ready, with the sidecar `xds-server inject`
    added; each runs it (iptables of istio-init, Envoy with the injected bootstrap's node id), and
    the client's sidecar load-balances over exactly their IPs."""
    pods = mesh.wait_ready_pods(WEB, 2)
    for pod in pods:
        obj = mesh.api.get(Ref("Pod", "default", pod.name))
        assert [c["name"] for c in obj["spec"]["containers"]] == ["app", "istio-proxy"]
        assert [c["name"] for c in obj["spec"]["initContainers"]] == ["istio-init"]
        assert obj["status"]["podIP"] == pod.ip
        assert pod.interception == "REDIRECT" and pod.envoy is not None
        node = pod.envoy.config_dump()["configs"][0]["bootstrap"]["node"]
        assert node["id"] == f"sidecar~{pod.ip}~{pod.name}.default~default.svc.cluster.local"
    client_envoy(client).wait_endpoints(CLUSTER, {f"{p.ip}:8080" for p in pods}, timeout=CONVERGE)
    served = {r.served_by for r in client.http_many(f"http://{WEB_HOST}:8080/", 8)}
    assert served == {p.name for p in pods}
    # Inbound through each web pod's own sidecar (captured to 15006, then to the app).
    for pod in pods:
        assert pod.envoy is not None
        assert pod.envoy.cluster_stat("inbound|8080||", "upstream_rq_total") >= 1


def test_scaling_adds_and_removes_endpoints(mesh: KubeMesh, client: Pod, loop: RequestLoop) -> None:
    """Scale web 2 -> 3: the new Pod's IP joins the client's endpoints once it is Ready and requests
    reach it; 3 -> 1: the removed Pods (Terminating first, stopped after their grace period) leave
    the endpoints before they stop, so no request fails."""
    envoy = client_envoy(client)
    mesh.scale("web", 3)
    three = web_ips(mesh, 3)
    envoy.wait_endpoints(CLUSTER, three, timeout=CONVERGE)
    names = {p.name for p in mesh.wait_ready_pods(WEB, 3)}
    wait_for(lambda: {r.served_by for r in client.http_many(f"http://{WEB_HOST}:8080/", 9)} == names,
             timeout=CONVERGE, what="requests reach all three web pods")
    loop.wait_more()
    mesh.scale("web", 1)
    one = web_ips(mesh, 1)
    envoy.wait_endpoints(CLUSTER, one, timeout=CONVERGE)
    loop.wait_more()
    mesh.scale("web", 2)
    envoy.wait_endpoints(CLUSTER, web_ips(mesh, 2), timeout=CONVERGE)


def test_deleted_pod_is_replaced(mesh: KubeMesh, client: Pod, loop: RequestLoop) -> None:
    """`kubectl delete pod`: the Pod turns Terminating and leaves the endpoints; the deployment
    controller makes a replacement, which joins them once Ready, with a new name and IP."""
    envoy = client_envoy(client)
    before = mesh.wait_ready_pods(WEB, 2)
    victim = before[0]
    mesh.api.delete(Ref("Pod", "default", victim.name))
    gone = f"{victim.ip}:8080"
    wait_for(lambda: gone not in envoy.endpoints().get(CLUSTER, [gone]), timeout=CONVERGE,
             what=f"{gone} (Terminating) out of the client's endpoints")
    after = mesh.wait_ready_pods(WEB, 2)
    assert victim.name not in {p.name for p in after}
    envoy.wait_endpoints(CLUSTER, {f"{p.ip}:8080" for p in after}, timeout=CONVERGE)
    loop.wait_more()
