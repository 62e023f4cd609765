"""A mesh whose configuration and pods come from a real kube-apiserver, as in a kind cluster.

`KubeMesh` keeps `Mesh`'s API, so the same e2e tests run through either source:

- `apply(name, *docs)` server-side-applies the objects (namespaces are created on demand) and
  deletes what an earlier `apply` of the same name held but this one does not; `delete(name)`
  deletes them (a Pod gracefully: it turns Terminating, as after `kubectl delete pod`).
- `register(pod)` creates the Pod object (bound to the one node) and writes its status: what a
  kubelet reports for a pod that has no sidecar.
- `inject(pod)` sends the pod's manifest through `xds-server inject`, creates the result through
  the API and lets the harness kubelet (`e2e.harness.kubelet`) run it in the pod's namespace: the
  injected istio-init script, the injected Envoy bootstrap, then podIP and Ready written back.
- `deployment(...)` creates an injected Deployment; the harness controllers expand it into Pods
  and run them (`scale`, and deleting a Pod, behave as with a deployment controller).
- `start_server(replicas=N)` runs N `xds-server serve --kubeconfig` replicas, on 198.18.0.1,
  .2, ..., all watching the API server; `xds-server.xds-system.svc.cluster.local` resolves to all
  of them in the node DNS, and that is the address the sidecars are injected with.

The API server listens on the host's loopback; a forwarder (`nsforward.py`) gives the node
namespace the same API on 127.0.0.1:6443. Service VIPs come from 198.19.<mesh id>.0/24, inside
the API server's service range, so meshes that follow each other on one API server never reuse
an address whose release is still pending.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import apps, server
from e2e.harness.envoy import Envoy
from e2e.harness.kubeapi import KubeApi, KubeError, Ref
from e2e.harness.kubelet import HTTP_APP_IMAGE, NODE_NAME, Controllers, Kubelet
from e2e.harness.mesh import GATEWAY, POD_NET, VIP_NET, XDS_PORT, Mesh
from e2e.harness.pod import Pod
from e2e.harness.run import Run
from e2e.harness.waits import wait_for

API_LISTEN = "127.0.0.1:6443"  # the API server as the node namespace sees it
XDS_SERVICE = "xds-server.xds-system.svc.cluster.local"
ADMIN_PORT = 15014
NSFORWARD = Path(__file__).with_name("nsforward.py")
INTERCEPTION_ANNOTATION = "sidecar.istio.io/interceptionMode"


@dataclass(frozen=True)
class KubeCluster:
    """How to reach the API server from the host: URL, CA file, a token (admin unless a test
    narrows it) and the token the xds-server replicas use."""

    server: str
    ca_file: str
    admin_token: str
    server_token: str


class KubeMesh(Mesh):
    source = "kubernetes"
    # The API server's own Service (default/kubernetes, 443), as in every cluster.
    platform_hosts = frozenset({"kubernetes.default.svc.cluster.local"})

    def __init__(self, run: Run, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.api = KubeApi(cluster.server, cluster.admin_token, cluster.ca_file)
        self.servers: list[server.XdsServer] = []
        self.objects: dict[str, list[Ref]] = {}  # apply() name -> the objects it holds
        self.namespaces: set[str] = set()
        self._lock = threading.RLock()  # the controllers' thread adds and removes pods too
        self.controllers: Controllers | None = None
        super().__init__(run)
        self._vips = (str(ip) for ip in itertools.islice(
            ipaddress.ip_network(f"198.19.{self.id % 256}.0/24").hosts(), 9, None))
        assert ipaddress.ip_network(f"198.19.{self.id % 256}.0/24").subnet_of(VIP_NET)  # type: ignore[arg-type]
        host, _, port = cluster.server.removeprefix("https://").rpartition(":")
        self.node.spawn("kube-api-forward", [
            sys.executable, "-I", str(NSFORWARD), "--listen", API_LISTEN, "--to", f"{host}:{port}",
            "--to-netns", f"/proc/{os.getpid()}/ns/net"], ready_line="READY")
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(kubeconfig(f"https://{API_LISTEN}", cluster.ca_file, cluster.server_token))
        self.kubelet = Kubelet(self.api, lambda url: apps.http(self.node, url, timeout=2).status == 200)
        self.controllers = Controllers(self.api, self.kubelet, self._controller_add_pod,
                                       self._controller_remove_pod, self.workdir)

    # -- pods ------------------------------------------------------------------------------------

    def add_pod(self, name: str, namespace: str = "default", *, labels: dict[str, str] | None = None,
                ip: str | None = None) -> Pod:
        with self._lock:
            return super().add_pod(name, namespace, labels=labels, ip=ip)

    def _controller_add_pod(self, name: str, namespace: str, labels: dict[str, str]) -> Pod:
        return self.add_pod(name, namespace, labels=labels)

    def _controller_remove_pod(self, pod: Pod) -> None:
        with self._lock:
            if pod.fqdn_id in self.pods:
                Mesh.remove_pod(self, pod, unregister=False)

    def remove_pod(self, pod: Pod, *, unregister: bool = True) -> None:
        """The pod's API object goes at once (grace 0), then its namespace and processes."""
        with self._lock:
            if unregister:
                for ref in self.objects.pop(f"pod-{pod.namespace}-{pod.name}", []):
                    self.api.delete(ref, grace=0)
            Mesh.remove_pod(self, pod, unregister=False)

    def pod_manifest(self, pod: Pod, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        doc = pod.manifest()
        doc.pop("status")
        doc["spec"]["nodeName"] = NODE_NAME
        if annotations:
            doc["metadata"]["annotations"] = dict(annotations)
        return doc

    def inject(self, pod: Pod, *, interception: str = "REDIRECT", sotw: bool = False,
               wait: bool = True) -> Envoy:
        """`xds-server inject` the pod's manifest, create it through the API, run it (kubelet)."""
        assert self.servers, "start_server() first"
        if interception not in ("REDIRECT", "NONE"):
            raise ValueError(f"unsupported interception mode {interception}")
        doc = self.pod_manifest(pod, {INTERCEPTION_ANNOTATION: interception} if interception != "REDIRECT" else None)
        [injected] = inject([doc], f"{XDS_SERVICE}:{XDS_PORT}")
        name = f"pod-{pod.namespace}-{pod.name}"
        with self._lock:
            for ref in self.objects.pop(name, []):  # registered earlier without a sidecar
                self.api.delete(ref, grace=0)
            self.api.ensure_namespace(pod.namespace)
            self.namespaces.add(pod.namespace)
            obj = self.api.create(injected)
            self.objects[name] = [Ref.of(obj | {"kind": "Pod"})]
        pod.interception = interception

        def edit(boot: dict[str, Any]) -> dict[str, Any]:
            if sotw:
                boot["dynamic_resources"]["ads_config"]["api_type"] = "GRPC"
            return self.edit_bootstrap(pod, boot)

        envoy = self.kubelet.run(pod, obj, wait=wait, edit_bootstrap=edit)
        assert envoy is not None, "xds-server inject added no sidecar"
        return envoy

    def edit_bootstrap(self, pod: Pod, bootstrap: dict[str, Any]) -> dict[str, Any]:
        """Hook for tests that change how a sidecar reaches the servers (see test_replicas)."""
        return bootstrap

    # -- workloads -------------------------------------------------------------------------------

    def deployment(self, name: str, namespace: str = "default", *, replicas: int = 1,
                   labels: dict[str, str] | None = None, ports: tuple[int, ...] = (8080,),
                   grace_seconds: int = 2) -> dict[str, Any]:
        """An injected Deployment whose containers serve HTTP on `ports` (the harness app)."""
        labels = dict(labels or {"app": name})
        doc = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": grace_seconds,
                        "containers": [{"name": "app", "image": HTTP_APP_IMAGE,
                                        "ports": [{"containerPort": p} for p in ports]}],
                    },
                },
            },
        }
        [injected] = inject([doc], f"{XDS_SERVICE}:{XDS_PORT}")
        self.apply(f"deploy-{namespace}-{name}", injected)
        return injected

    def scale(self, name: str, replicas: int, namespace: str = "default") -> None:
        self.api.request("PATCH", Ref("Deployment", namespace, name).path(), {"spec": {"replicas": replicas}},
                         content_type="application/merge-patch+json")

    def api_pods(self, labels: dict[str, str], namespace: str = "default") -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return list(self.api.list("Pod", namespace, labelSelector=selector)["items"])

    def wait_ready_pods(self, labels: dict[str, str], count: int, namespace: str = "default",
                        timeout: float = 30.0) -> list[Pod]:
        """Wait until exactly `count` Pods with `labels` exist, none terminating, all Ready and running
        here; return their harness pods."""
        def ready() -> list[Pod] | None:
            items = self.api_pods(labels, namespace)
            if len(items) != count or any(p["metadata"].get("deletionTimestamp") for p in items):
                return None
            if not all(_is_ready(p) for p in items):
                return None
            with self._lock:
                pods = [self.pods.get(f"{p['metadata']['name']}.{namespace}") for p in items]
            return [p for p in pods if p is not None] if all(pods) else None

        return wait_for(ready, timeout=timeout, what=f"{count} ready pods {labels} in {namespace}",
                        describe=lambda: str([(p["metadata"]["name"], _is_ready(p),
                                               p["metadata"].get("deletionTimestamp"))
                                              for p in self.api_pods(labels, namespace)]))

    # -- config ----------------------------------------------------------------------------------

    def start_server(self, extra_args: list[str] | None = None, replicas: int = 1) -> server.XdsServer:
        assert not self.servers
        for i in range(replicas):
            self.start_replica(i, extra_args)
        self.dns.set(XDS_SERVICE, *(replica_ip(i) for i in range(replicas)))
        return self.servers[0]

    def start_replica(self, index: int, extra_args: list[str] | None = None) -> server.XdsServer:
        """Replica `index` (again, after `stop_replica`): serve on 198.18.0.<1+index>."""
        ip = replica_ip(index)
        if index and ip not in self.node.ip("-4", "-o", "addr", "show", "dev", "br0"):
            self.node.ip("addr", "add", f"{ip}/{POD_NET.prefixlen}", "dev", "br0")
        srv = server.XdsServer(self.node, None, f"{ip}:{XDS_PORT}", f"{ip}:{ADMIN_PORT}", extra_args,
                               source_args=["--kubeconfig", str(self.kubeconfig)], name=f"xds-server-{index}")
        if index < len(self.servers):
            self.servers[index] = srv
        else:
            self.servers.append(srv)
        self.server = self.servers[0]
        return srv

    def kill_replica(self, index: int) -> None:
        """SIGKILL replica `index`: no drain, no GOAWAY; its connections just break."""
        proc = self.servers[index].proc
        proc.popen.kill()
        proc.popen.wait(10)

    def apply(self, name: str, *docs: dict[str, Any] | str) -> Path:
        objs: list[dict[str, Any]] = []
        for d in docs:
            objs += [o for o in yaml.safe_load_all(d)] if isinstance(d, str) else [d]
        refs = []
        with self._lock:
            for obj in objs:
                ref = Ref.of(obj)
                if ref.namespace:
                    self.api.ensure_namespace(ref.namespace)
                    self.namespaces.add(ref.namespace)
                if obj["kind"] == "Pod":
                    self._apply_pod(obj)
                else:
                    self.api.apply(obj)
                refs.append(ref)
            for gone in set(self.objects.get(name, [])) - set(refs):
                self.api.delete(gone)
            self.objects[name] = refs
        return self.config_dir / f"{name}.yaml"  # nothing is written there: the API holds it

    def _apply_pod(self, obj: dict[str, Any]) -> None:
        """A Pod as a test registers it: created (bound to the node) if new, then its status."""
        ref = Ref.of(obj)
        if not self.api.get(ref):
            spec = {**obj["spec"], "nodeName": NODE_NAME}
            self.api.create({k: v for k, v in obj.items() if k != "status"} | {"spec": spec})
        if "status" in obj:
            self.api.patch_status(ref, obj["status"])

    def delete(self, name: str) -> None:
        with self._lock:
            for ref in self.objects.pop(name, []):
                self.api.delete(ref)

    def debug_dump(self) -> str:
        parts = [super().debug_dump()]
        for i, srv in enumerate(self.servers[1:], 1):
            parts.append(f"[xds-server-{i}]\n{srv.proc.log_tail(60)}")
        log = self.workdir / "controllers.log"
        if log.exists():
            parts.append("[controllers]\n" + "\n".join(log.read_text().splitlines()[-40:]))
        return "\n".join(parts)

    def close(self) -> None:
        controllers = getattr(self, "controllers", None)
        if controllers is not None:
            controllers.stop()
        try:
            self._delete_everything()
        finally:
            super().close()

    def _delete_everything(self) -> None:
        """Leave the shared API server as we found it (bar empty namespaces)."""
        api = getattr(self, "api", None)
        if api is None:
            return
        for refs in getattr(self, "objects", {}).values():
            for ref in refs:
                api.delete(ref, grace=0)
        for ns in getattr(self, "namespaces", set()):
            for kind in ("Deployment", "Pod", "Service", "Sidecar", "ServiceEntry", "VirtualService",
                         "DestinationRule"):
                try:
                    items = api.list(kind, ns)["items"]
                except KubeError:
                    continue
                for item in items:
                    api.delete(Ref(kind, ns, item["metadata"]["name"]), grace=0)


def replica_ip(index: int) -> str:
    return str(ipaddress.ip_address(GATEWAY) + index)


def kubeconfig(server_url: str, ca_file: str, token: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
        "clusters": [{"name": "e2e", "cluster": {"server": server_url, "certificate-authority": ca_file}}],
        "users": [{"name": "e2e", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
    })


def inject(docs: list[dict[str, Any]], xds_address: str) -> list[dict[str, Any]]:
    """`xds-server inject -f -` on the manifests, as a user pipes them to `kubectl apply -f -`."""
    out = subprocess.run([*server.XDS_SERVER, "inject", "-f", "-", "--xds-address", xds_address],
                         input=yaml.safe_dump_all(docs), capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"xds-server inject failed ({out.returncode}): {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


__all__ = ["KubeCluster", "KubeMesh", "inject", "kubeconfig", "replica_ip"]
