"""A real kube-apiserver + etcd for tests, started the way controller-runtime's envtest does.

The binaries come from `KUBEBUILDER_ASSETS` (a directory holding `etcd` and `kube-apiserver`, as
`setup-envtest use -p path` prints; `scripts/test.sh` sets it for CI's checkout). Each process
listens on a free loopback port; the apiserver serves a certificate of a throwaway CA, accepts
one admin token (`--token-auth-file`, group system:masters), signs service-account tokens with
a throwaway key (so TokenRequest works), and authorizes with RBAC.

There is no controller-manager, scheduler or kubelet: Pods stay Pending unless a test writes
their status (`set_pod_status`), no EndpointSlices appear, ServiceAccounts must be created by hand
(`ensure_namespace` creates the `default` one the ServiceAccount admission plugin wants), and a
deleted namespace stays Terminating (its objects are still listed) until finalized.

`EnvTest` is used through the session-scoped `kube_api` fixture (tests/kube/plugin.py): one
apiserver per test session, so tests isolate themselves by namespace (`new_namespace`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.certs import TestCA

ASSETS_ENV = "KUBEBUILDER_ASSETS"
# Service ClusterIPs: away from 198.18.0.0/15 (the e2e pod networks) and from loopback.
SERVICE_CIDR = "10.96.0.0/16"
ADMIN_USER = "envtest-admin"


class EnvTestError(Exception):
    """etcd or kube-apiserver did not start, or an API request failed."""


class ApiError(EnvTestError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def missing_assets() -> str | None:
    """Why the envtest binaries cannot be used, or None when they can."""
    assets = os.environ.get(ASSETS_ENV)
    if not assets:
        return (f"{ASSETS_ENV} is not set (point it at a directory holding etcd and kube-apiserver, "
                f"e.g. `export {ASSETS_ENV}=$(setup-envtest use -p path 1.36.x)`)")
    for binary in ("etcd", "kube-apiserver"):
        path = Path(assets) / binary
        if not os.access(path, os.X_OK):
            return f"{ASSETS_ENV}={assets} has no executable {binary}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_process(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
    try:
        proc.wait(grace or None)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EnvTest:
    """etcd + kube-apiserver in a temporary directory. `start()`, then `stop()` (idempotent; also
    on a failed start). Talks to the API with the admin token through `request` and friends."""

    def __init__(self, assets: str | os.PathLike[str] | None = None, *, apiserver_args: tuple[str, ...] = ()) -> None:
        self.assets = Path(assets or os.environ[ASSETS_ENV])
        self._extra_args = apiserver_args
        self.dir = Path(tempfile.mkdtemp(prefix="envtest-"))
        self.admin_token = secrets.token_hex(16)
        self.etcd_port = free_port()
        self.apiserver_port = free_port()
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._crds: dict[str, list[str]] = {}  # kustomization -> CRD names, as installed
        ca = TestCA(self.dir / "pki", "envtest-ca")
        self.ca_file = Path(ca.path)
        serving = ca.issue("apiserver", dns=("localhost", "kubernetes", "kubernetes.default",
                                              "kubernetes.default.svc"), ips=("127.0.0.1",), server=True)
        self._serving_cert, self._serving_key = serving.cert_path, serving.key_path
        self._write_service_account_key()
        (self.dir / "tokens.csv").write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def start(self) -> EnvTest:
        try:
            self._start_etcd()
            self.start_apiserver()
            self._wait_for(lambda: self._get_ok("/api/v1/namespaces/default"), 30, "the default namespace")
            self.ensure_namespace("default")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.stop_apiserver()
            _stop_process(self._etcd, 5)
            self._etcd = None
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EnvTest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_apiserver(self) -> None:
        if self._apiserver is not None and self._apiserver.poll() is None:
            return
        args = [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={self._serving_cert}",
            f"--tls-private-key-file={self._serving_key}",
            f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={self.dir / 'tokens.csv'}",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={self.dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.dir / 'sa.key'}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--cert-dir={self.dir / 'cert-dir'}",
            *self._extra_args,
        ]
        log = open(self.dir / "kube-apiserver.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self._apiserver = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_for(lambda: self._get_ok("/readyz"), 60, "kube-apiserver /readyz", self._apiserver,
                       self.dir / "kube-apiserver.log")

    def stop_apiserver(self, *, crash: bool = False) -> None:
        """SIGTERM (with watches open a graceful stop can take ~10 s, then SIGKILL), or SIGKILL at
        once when `crash`."""
        _stop_process(self._apiserver, 0 if crash else 10)
        self._apiserver = None

    def restart_apiserver(self, *, compact: bool = False, crash: bool = False) -> None:
        """Stop the apiserver (open watches drop) and start it again on the same port; etcd keeps
        the data. With `compact`, etcd's history is compacted while it is down, so its fresh watch
        cache cannot serve an older resourceVersion either: resuming from one answers 410 Gone."""
        self.stop_apiserver(crash=crash)
        if compact:
            self.compact_etcd()
        self.start_apiserver()

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (etcd v3 API, through its HTTP
        gateway) and return that revision: a watch resumed from an older resourceVersion then
        gets 410 Gone, once the apiserver's watch cache no longer holds it (restart the apiserver
        around the compaction to empty that cache)."""
        revision = int(self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode(),
                                                         "limit": 1})["header"]["revision"])
        self._etcd_call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    # ------------------------------------------------------------ credentials
    def kubeconfig(self, token: str | None = None, path: str | os.PathLike[str] | None = None,
                   namespace: str | None = None, server: str | None = None) -> Path:
        """A kubeconfig for this apiserver (or `server`, e.g. a relay in front of it) with `token`
        (the admin token by default)."""
        if path is None:
            fd, name = tempfile.mkstemp(prefix="kubeconfig-", suffix=".yaml", dir=self.dir)
            os.close(fd)
            path = name
        context: dict[str, Any] = {"cluster": "envtest", "user": "user"}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {"server": server or self.url,
                                                          "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "user", "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "envtest", "context": context}],
            "current-context": "envtest",
        }
        Path(path).write_text(yaml.safe_dump(doc))
        return Path(path)

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A token of this ServiceAccount (TokenRequest), which must exist."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        answer = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", body)
        return str(answer["status"]["token"])

    def kubectl(self, *args: str, token: str | None = None, check: bool = True,
                input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl (from PATH) against this apiserver."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise EnvTestError("kubectl is not on PATH")
        config = self.kubeconfig(token)
        try:
            proc = subprocess.run([kubectl, f"--kubeconfig={config}", *args], capture_output=True, text=True,
                                  input=input, timeout=timeout)
        finally:
            config.unlink(missing_ok=True)
        if check and proc.returncode != 0:
            raise EnvTestError(f"kubectl {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def install_crds(self, kustomization: str | os.PathLike[str]) -> list[str]:
        """`kubectl apply -k` a directory of CRDs and wait until each is Established; returns
        their names. Applied once per session unless `delete_crd`/`patch_crd` changed one."""
        key = os.fspath(kustomization)
        if key in self._crds:
            return self._crds[key]
        out = self.kubectl("apply", "--server-side", "--force-conflicts", "-k", os.fspath(kustomization),
                           "-o", "name").stdout
        names = [line.split("/", 1)[1] for line in out.split() if line.startswith("customresourcedefinition")]

        def established() -> bool:
            for name in names:
                crd = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                # A CRD just created has `conditions: null` until its controller gets to it.
                conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or ()}
                if conditions.get("Established") != "True":
                    return False
            return True

        self._wait_for(established, 30, f"CRDs {names} established")
        self._crds[key] = names
        return names

    def patch_crd(self, name: str, patch: Any, content_type: str = "application/json-patch+json") -> dict[str, Any]:
        """Patch a CRD (e.g. stop serving a version); a JSON patch unless told otherwise."""
        self._crds.clear()
        return self.request("PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", patch,
                            content_type=content_type)

    def delete_crd(self, name: str) -> None:
        """Delete a CRD (and with it every object of its kind) and wait until it is gone."""
        self._crds.clear()
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        try:
            self.request("DELETE", path)
        except ApiError as e:
            if e.status != 404:
                raise
        self._wait_for(lambda: not self._get_ok(path), 30, f"CRD {name} deleted")

    # ------------------------------------------------------------ the API (admin)
    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", token: str | None = None,
                timeout: float = 30) -> dict[str, Any]:
        payload = self.request_raw(method, path, body, content_type=content_type, token=token, timeout=timeout)
        return json.loads(payload) if payload else {}

    def request_raw(self, method: str, path: str, body: Any = None, *,
                    content_type: str = "application/json", token: str | None = None,
                    timeout: float = 30) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=timeout) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, method, path, e.read().decode(errors="replace")) from None
        return payload

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", collection_path(obj), obj)

    def apply(self, obj: Mapping[str, Any], field_manager: str = "envtest") -> dict[str, Any]:
        """Server-side apply (create or update)."""
        path = object_path(obj) + f"?fieldManager={field_manager}&force=true"
        return self.request("PATCH", path, obj, content_type="application/apply-patch+yaml")

    def delete(self, obj: Mapping[str, Any], *, missing_ok: bool = True) -> None:
        try:
            self.request("DELETE", object_path(obj))
        except ApiError as e:
            if not (missing_ok and e.status == 404):
                raise

    def get(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("GET", object_path(obj))

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """The namespace and its `default` ServiceAccount (no token controller makes it here)."""
        ns: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        if labels:
            ns["metadata"]["labels"] = dict(labels)
        for obj in (ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": "default", "namespace": name}}):
            try:
                self.create(obj)
            except ApiError as e:
                if e.status != 409:
                    raise

    def new_namespace(self, prefix: str = "t", labels: Mapping[str, str] | None = None) -> str:
        """A fresh namespace with a unique name; `delete_namespace` removes it."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.ensure_namespace(name, labels)
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete the namespace and what is in it. Without a namespace controller this deletes
        the objects of the kinds tests create, then clears the finalizer so the namespace goes."""
        for path in (f"/api/v1/namespaces/{name}/pods", f"/api/v1/namespaces/{name}/services",
                     f"/api/v1/namespaces/{name}/configmaps", f"/api/v1/namespaces/{name}/serviceaccounts"):
            with contextlib.suppress(ApiError):
                self.request("DELETE", path + "?gracePeriodSeconds=0")
        for plural in self._istio_plurals():
            with contextlib.suppress(ApiError):
                self.request("DELETE", f"/apis/{plural}/namespaces/{name}/{plural.split('/')[-1]}")
        try:
            self.request("DELETE", f"/api/v1/namespaces/{name}")
            self.request("PUT", f"/api/v1/namespaces/{name}/finalize",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                          "spec": {"finalizers": []}})
        except ApiError as e:
            if e.status != 404:
                raise

    def _istio_plurals(self) -> list[str]:
        """group/version/plural of every custom resource served (their objects are namespaced
        collections a namespace deletion must clear without a garbage collector)."""
        try:
            crds = self.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
        except ApiError:
            return []
        out = []
        for crd in crds:
            spec = crd["spec"]
            if spec.get("scope") != "Namespaced":
                continue
            for version in spec["versions"]:
                if version.get("storage"):
                    out.append(f"{spec['group']}/{version['name']}/{spec['names']['plural']}")
        return out

    def set_pod_status(self, namespace: str, name: str, pod_ip: str | None, *, ready: bool = True,
                       phase: str = "Running", host_ip: str = "127.0.0.1") -> dict[str, Any]:
        """What a kubelet would write: phase, podIP(s), hostIP and the Ready condition, through
        the status subresource."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        state = "True" if ready else "False"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": host_ip,
            "conditions": [
                {"type": t, "status": state if t in ("Ready", "ContainersReady") else "True",
                 "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
        }
        if pod_ip:
            status["podIP"] = pod_ip
            status["podIPs"] = [{"ip": pod_ip}]
        return self.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status},
                            content_type="application/merge-patch+json")

    def wait_for(self, condition: Any, timeout: float = 10, what: str = "condition") -> None:
        self._wait_for(condition, timeout, what)

    # ------------------------------------------------------------ internals
    def _write_service_account_key(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.dir / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (self.dir / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _start_etcd(self) -> None:
        peer = free_port()
        log = open(self.dir / "etcd.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            self._etcd = subprocess.Popen(
                [str(self.assets / "etcd"), f"--data-dir={self.dir / 'etcd'}",
                 f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
                 f"--listen-peer-urls=http://127.0.0.1:{peer}",
                 f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                 f"--initial-cluster=default=http://127.0.0.1:{peer}",
                 "--unsafe-no-fsync=true", "--log-level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_for(self._etcd_healthy, 30, "etcd /health", self._etcd, self.dir / "etcd.log")

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _etcd_call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as e:
            raise EnvTestError(f"etcd {path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def exists(self, path: str) -> bool:
        """GET `path` as admin answers 2xx."""
        return self._get_ok(path)

    def _get_ok(self, path: str) -> bool:
        try:
            self.request_raw("GET", path, timeout=2)
            return True
        except (OSError, EnvTestError, ValueError):
            return False

    def _wait_for(self, condition: Any, timeout: float, what: str,
                  proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while not condition():
            if proc is not None and proc.poll() is not None:
                raise EnvTestError(f"{what}: the process exited with {proc.returncode}{_tail(log)}")
            if time.monotonic() > deadline:
                raise EnvTestError(f"{what}: not reached within {timeout:.0f}s{_tail(log)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n" + "\n".join(text)


# ---------------------------------------------------------------- REST paths of objects
_CORE_PLURALS = {"Pod": "pods", "Service": "services", "Namespace": "namespaces", "ConfigMap": "configmaps",
                 "ServiceAccount": "serviceaccounts", "Secret": "secrets", "Endpoints": "endpoints"}
_CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def _plural(kind: str) -> str:
    if kind in _CORE_PLURALS:
        return _CORE_PLURALS[kind]
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith(("s", "x")) else "s")


def collection_path(obj: Mapping[str, Any]) -> str:
    """The REST collection of an object (kinds of the core group, Istio networking, RBAC, apps)."""
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    namespace = (obj.get("metadata") or {}).get("namespace") or "default"
    scope = "" if kind in _CLUSTER_SCOPED else f"/namespaces/{namespace}"
    return f"{base}{scope}/{_plural(kind)}"


def object_path(obj: Mapping[str, Any]) -> str:
    return f"{collection_path(obj)}/{obj['metadata']['name']}"


@contextlib.contextmanager
def envtest() -> Iterator[EnvTest]:
    """A started EnvTest, stopped (and its files removed) on exit."""
    env = EnvTest()
    with env:
        yield env
