"""The missing kubelet and controllers of the kind-like e2e: Pods from the API run as harness pods.

The kube-apiserver here has no scheduler, controller-manager or kubelet. `Kubelet.run` plays the
kubelet for one Pod object: the pod's network namespace is its sandbox; the injected `istio-init`
container's own script (`xds-server inject` output) loads the iptables rules; the injected
`istio-proxy` container's `--config-yaml` bootstrap, with the downward-API variables expanded as
the kubelet does, starts the real Envoy; `status.podIP` and the Ready condition are written back
through the status subresource (Ready once Envoy's readiness port 15021 answers, the injected
readiness probe). Containers whose image is `e2e/http` run the harness HTTP app on each of their
containerPorts; other app containers are the test's business (the test starts their apps).

Deviations, all for a 2-core machine: Envoy runs with `--concurrency 1 --drain-time-s 1` and
the harness log level instead of the injected values; a Deployment owns its Pods directly (no
ReplicaSet in between); a terminating Pod of a Deployment is stopped at its deletionTimestamp,
i.e. when its grace period ends (a real kubelet sends SIGTERM at once; these tiny apps would exit
at once, which is not what a draining app does).

`Controllers` is the deployment controller and the kubelet's sync loop in one background thread,
woken by watches on Pods and Deployments and level-based (every pass compares the whole state).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from e2e.harness.envoy import Envoy
from e2e.harness.kubeapi import KubeApi, KubeError, Ref
from e2e.harness.pod import Pod
from e2e.harness.waits import wait_for

NODE_NAME = "e2e-node"
HTTP_APP_IMAGE = "e2e/http"
PROXY_CONTAINER, INIT_CONTAINER = "istio-proxy", "istio-init"
READY_PORT = 15021


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args: `$$` is a literal `$`, unknown names stay."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def downward_env(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    """The container's env: plain values and the fieldRefs the injected sidecar uses."""
    status, meta = pod.get("status") or {}, pod.get("metadata") or {}
    fields = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs") or []),
    }
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
        elif path := (var.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath"):
            env[var["name"]] = fields[path]
    return env


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def proxy_container(pod: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in containers(pod) if c.get("name") == PROXY_CONTAINER), None)


def proxy_bootstrap(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The injected Envoy's bootstrap (its `--config-yaml`, expanded), or None without a sidecar."""
    c = proxy_container(pod)
    if c is None:
        return None
    env = downward_env(c, pod)
    args = [expand(a, env) for a in c.get("args") or []]
    return yaml.safe_load(args[args.index("--config-yaml") + 1])


def readiness_url(pod: dict[str, Any], ip: str) -> str:
    """The sidecar container's own readinessProbe (httpGet), as the kubelet would call it."""
    c = proxy_container(pod) or {}
    get = (c.get("readinessProbe") or {}).get("httpGet") or {}
    return f"http://{ip}:{get.get('port', READY_PORT)}{get.get('path', '/healthz/ready')}"


def init_script(pod: dict[str, Any]) -> list[str] | None:
    for c in (pod.get("spec") or {}).get("initContainers") or []:
        if c.get("name") == INIT_CONTAINER:
            return [*c.get("command", []), *c.get("args", [])]
    return None


def pod_status(ip: str, *, ready: bool, started: bool = True) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flag = "True" if ready else "False"
    return {
        "phase": "Running" if started else "Pending",
        "hostIP": "198.18.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True" if started else "False", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ],
    }


class Kubelet:
    def __init__(self, api: KubeApi, node_probe: Callable[[str], bool]) -> None:
        self.api = api
        self._probe = node_probe  # GET url from the node namespace -> 200?
        self._probe_urls: dict[Ref, str] = {}

    def run(self, pod: Pod, obj: dict[str, Any], *, wait: bool = True,
            edit_bootstrap: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Envoy | None:
        """Start the Pod object `obj` in the harness pod `pod` (its sandbox): IP first, then the
        init container, apps, the sidecar, and Ready once the sidecar is (or at once without one)."""
        ref = Ref.of(obj)
        obj = self.api.patch_status(ref, pod_status(pod.ip, ready=False, started=False))
        script = init_script(obj)
        if script:
            pod.ns.exec(*script)  # istio-init: runs as root in the pod, like the init container
            pod.interception = "REDIRECT"
        for c in (obj.get("spec") or {}).get("containers") or []:
            if c.get("image") == HTTP_APP_IMAGE:
                for port in c.get("ports") or []:
                    pod.serve_http(int(port["containerPort"]))
        bootstrap = proxy_bootstrap(obj)
        if bootstrap is None:
            self.api.patch_status(ref, pod_status(pod.ip, ready=True))
            return None
        if edit_bootstrap:
            bootstrap = edit_bootstrap(bootstrap)
        envoy = pod.start_envoy(bootstrap, wait=wait)
        self._probe_urls[ref] = readiness_url(obj, pod.ip)
        if wait:
            wait_for(lambda: self.probe(pod, ref), timeout=20, what=f"{ref.namespace}/{ref.name} readiness probe")
        return envoy

    def probe(self, pod: Pod, ref: Ref) -> bool:
        """The injected readiness probe (GET pod-ip:15021/healthz/ready from the node); Ready on success."""
        if not self._probe(self._probe_urls[ref]):
            return False
        self.api.patch_status(ref, pod_status(pod.ip, ready=True))
        return True


class Controllers:
    """Deployments -> Pods, and Pods of Deployments -> running harness pods; see the module doc."""

    def __init__(self, api: KubeApi, kubelet: Kubelet, add_pod: Callable[[str, str, dict[str, str]], Pod],
                 remove_pod: Callable[[Pod], None], workdir: Path) -> None:
        self.api = api
        self.kubelet = kubelet
        self._add_pod = add_pod
        self._remove_pod = remove_pod
        self.running: dict[str, Pod] = {}  # uid -> pod started for a Deployment's Pod
        self.probing: dict[str, tuple[Pod, Ref]] = {}  # uid -> started, not Ready yet
        self.errors: list[str] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._log = (workdir / "controllers.log").open("a")
        self._threads = [threading.Thread(target=self._watch, args=(kind,), name=f"watch-{kind}", daemon=True)
                         for kind in ("Pod", "Deployment")]
        self._threads.append(threading.Thread(target=self._loop, name="controllers", daemon=True))
        for t in self._threads:
            t.start()

    def say(self, message: str) -> None:
        self._log.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        self._log.flush()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=40)
        self._log.close()

    def _watch(self, kind: str) -> None:
        while not self._stop.is_set():
            try:
                rv = self.api.list(kind, limit=1)["metadata"]["resourceVersion"]
                self._wake.set()
                for _event in self.api.watch(kind, rv, timeout_seconds=2):
                    self._wake.set()
                    if self._stop.is_set():
                        return
            except Exception as e:  # the API server may be restarting; retry
                if not self._stop.is_set():
                    self.say(f"watch {kind}: {e}")
                    self._stop.wait(0.5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Woken by any event; a pass every 0.25 s meanwhile notices ended grace periods.
            self._wake.wait(0.25)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync()
            except Exception as e:
                self.errors.append(repr(e))
                self.say(f"sync failed: {e!r}")

    def sync(self) -> None:
        deployments = self.api.list("Deployment")["items"]
        pods = self.api.list("Pod")["items"]
        by_owner: dict[str, list[dict[str, Any]]] = {}
        for p in pods:
            for owner in p["metadata"].get("ownerReferences") or []:
                by_owner.setdefault(owner["uid"], []).append(p)
        live_uids = {d["metadata"]["uid"] for d in deployments}
        for d in deployments:
            self._scale(d, [p for p in by_owner.get(d["metadata"]["uid"], [])
                            if not p["metadata"].get("deletionTimestamp")])
        now = datetime.now(UTC)
        seen = set()
        for p in pods:
            meta = p["metadata"]
            owners = meta.get("ownerReferences") or []
            if not owners:
                continue  # a test's own pod: the test runs it
            seen.add(meta["uid"])
            if not any(o["uid"] in live_uids for o in owners) and not meta.get("deletionTimestamp"):
                self.say(f"gc {meta['namespace']}/{meta['name']}: owner gone")  # the garbage collector
                self.api.delete(Ref.of({**p, "kind": "Pod"}))
                continue
            deletion = meta.get("deletionTimestamp")
            if deletion and now >= datetime.fromisoformat(deletion.replace("Z", "+00:00")):
                self._terminate(p)
            elif not deletion and meta["uid"] not in self.running:
                self._start(p)
        # Pods start without waiting for their Envoys (several start at once); each pass probes.
        for uid, (pod, ref) in list(self.probing.items()):
            if uid not in self.running:
                del self.probing[uid]
            elif pod.envoy is not None and not pod.envoy.proc.alive():
                del self.probing[uid]
                self.say(f"{ref.namespace}/{ref.name}: envoy exited:\n{pod.envoy.proc.log_tail(10)}")
            elif self.kubelet.probe(pod, ref):
                del self.probing[uid]
                self.say(f"{ref.namespace}/{ref.name} is Ready")
        for uid in set(self.running) - seen:  # deleted at once (grace 0): stop what still runs
            self.say(f"pod {self.running[uid].fqdn_id} is gone: stopping it")
            self._remove_pod(self.running.pop(uid))

    def _scale(self, deployment: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        want = int(deployment["spec"].get("replicas", 1))
        meta = deployment["metadata"]
        for _ in range(want - len(pods)):
            template = json.loads(json.dumps(deployment["spec"]["template"]))
            template.setdefault("metadata", {})
            template["metadata"].update({
                "name": f"{meta['name']}-{secrets.token_hex(3)}",
                "namespace": meta["namespace"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            })
            template["spec"]["nodeName"] = NODE_NAME  # scheduled at once: one node
            created = self.api.create({"apiVersion": "v1", "kind": "Pod", **template})
            self.say(f"created pod {meta['namespace']}/{created['metadata']['name']}")
        if len(pods) > want:
            # The deployment controller removes the newest first.
            newest = sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
            for p in newest[: len(pods) - want]:
                self.say(f"scale down: deleting {meta['namespace']}/{p['metadata']['name']}")
                self.api.delete(Ref.of({**p, "kind": "Pod"}))
        status = {"replicas": len(pods), "readyReplicas": sum(_ready(p) for p in pods),
                  "observedGeneration": meta.get("generation", 1)}
        if deployment.get("status", {}).get("replicas") != status["replicas"] or \
                deployment.get("status", {}).get("readyReplicas") != status["readyReplicas"]:
            try:
                self.api.request("PATCH", Ref("Deployment", meta["namespace"], meta["name"]).path("status"),
                                 {"status": status}, content_type="application/merge-patch+json")
            except KubeError as e:
                self.say(f"deployment status: {e}")

    def _start(self, p: dict[str, Any]) -> None:
        meta = p["metadata"]
        self.say(f"starting pod {meta['namespace']}/{meta['name']}")
        pod = self._add_pod(meta["name"], meta["namespace"], dict(meta.get("labels") or {}))
        self.running[meta["uid"]] = pod
        obj = {**p, "kind": "Pod", "apiVersion": "v1"}
        if self.kubelet.run(pod, obj, wait=False) is not None:
            self.probing[meta["uid"]] = (pod, Ref.of(obj))
            self._wake.set()  # probe again soon, not only at the next event

    def _terminate(self, p: dict[str, Any]) -> None:
        meta = p["metadata"]
        pod = self.running.pop(meta["uid"], None)
        self.say(f"grace period over: stopping {meta['namespace']}/{meta['name']}")
        if pod is not None:
            self._remove_pod(pod)
        self.api.delete(Ref.of({**p, "kind": "Pod"}), grace=0, uid=meta["uid"])


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


__all__ = ["Controllers", "Kubelet", "expand", "proxy_bootstrap"]
