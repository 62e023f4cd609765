"""A small REST client for the kube-apiserver the kind-like e2e runs against (admin token).

Only what the harness needs: server-side apply, create, get, list, delete, status writes and
watches, for the kinds the tests use. Raw JSON in and out, as `kubectl` would send it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3

FIELD_MANAGER = "e2e-harness"


@dataclass(frozen=True)
class Kind:
    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool = True


KINDS: dict[str, Kind] = {
    "Namespace": Kind("/api/v1", "namespaces", namespaced=False),
    "Pod": Kind("/api/v1", "pods"),
    "Service": Kind("/api/v1", "services"),
    "ConfigMap": Kind("/api/v1", "configmaps"),
    "Deployment": Kind("/apis/apps/v1", "deployments"),
    "Sidecar": Kind("/apis/networking.istio.io/v1", "sidecars"),
    "ServiceEntry": Kind("/apis/networking.istio.io/v1", "serviceentries"),
    "VirtualService": Kind("/apis/networking.istio.io/v1", "virtualservices"),
    "DestinationRule": Kind("/apis/networking.istio.io/v1", "destinationrules"),
}


class KubeError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


@dataclass(frozen=True)
class Ref:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Ref:
        meta = obj.get("metadata") or {}
        kind = obj["kind"]
        namespaced = KINDS[kind].namespaced
        return cls(kind, str(meta.get("namespace") or "default") if namespaced else "", str(meta["name"]))

    def path(self, sub: str = "") -> str:
        k = KINDS[self.kind]
        base = f"{k.prefix}/namespaces/{self.namespace}/{k.plural}" if k.namespaced else f"{k.prefix}/{k.plural}"
        return f"{base}/{self.name}{'/' + sub if sub else ''}"


def collection(kind: str, namespace: str | None = None) -> str:
    k = KINDS[kind]
    if k.namespaced and namespace:
        return f"{k.prefix}/namespaces/{namespace}/{k.plural}"
    return f"{k.prefix}/{k.plural}"


class KubeApi:
    def __init__(self, server: str, token: str, ca_file: str) -> None:
        self.server = server.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._http = urllib3.PoolManager(ca_certs=ca_file, cert_reqs="CERT_REQUIRED", maxsize=4,
                                         timeout=urllib3.Timeout(connect=5, read=30))

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                ok_missing: bool = False, ok_exists: bool = False, **params: Any) -> dict[str, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{self.server}{path}{'?' + query if query else ''}"
        r = self._http.request(method, url, body=data, headers=headers)
        if (r.status == 404 and ok_missing) or (r.status == 409 and ok_exists):
            return {}
        if r.status >= 300:
            raise KubeError(r.status, method, path, r.data.decode(errors="replace"))
        return json.loads(r.data) if r.data else {}

    # -- objects -------------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (`kubectl apply --server-side --force-conflicts`), at the object's own
        apiVersion (the API server refuses an apply body of another version than the URL's)."""
        version = str(obj.get("apiVersion") or "")
        prefix = f"/apis/{version}" if "/" in version else f"/api/{version or 'v1'}"
        path = Ref.of(obj).path().replace(KINDS[obj["kind"]].prefix, prefix, 1)
        return self.request("PATCH", path, obj, content_type="application/apply-patch+yaml",
                            fieldManager=FIELD_MANAGER, force="true")

    def create(self, obj: dict[str, Any], *, ok_exists: bool = False) -> dict[str, Any]:
        ref = Ref.of(obj)
        return self.request("POST", collection(ref.kind, ref.namespace), obj, ok_exists=ok_exists)

    def get(self, ref: Ref) -> dict[str, Any]:
        """The object, or {} when it does not exist."""
        return self.request("GET", ref.path(), ok_missing=True)

    def list(self, kind: str, namespace: str | None = None, **params: Any) -> dict[str, Any]:
        return self.request("GET", collection(kind, namespace), **params)

    def delete(self, ref: Ref, *, grace: int | None = None, uid: str | None = None) -> None:
        """Delete (gracefully unless `grace`); a missing object is fine."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", ref.path(), body, ok_missing=True)
        except KubeError as e:
            if e.status != 409:  # a uid precondition that no longer holds: someone else's object now
                raise

    def patch_status(self, ref: Ref, status: dict[str, Any]) -> dict[str, Any]:
        """What a kubelet does: a merge patch of the status subresource."""
        return self.request("PATCH", ref.path("status"), {"status": status},
                            content_type="application/merge-patch+json")

    def ensure_namespace(self, name: str) -> None:
        """The namespace and its `default` ServiceAccount (the ServiceAccount admission plugin
        wants it for every Pod; no controller makes it here)."""
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, ok_exists=True)
        self.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name},
        }, ok_exists=True)

    def watch(self, kind: str, resource_version: str, timeout_seconds: int = 30) -> Iterator[dict[str, Any]]:
        """Watch events of `kind` in every namespace from `resource_version` (ends after the timeout)."""
        url = (f"{self.server}{collection(kind)}?watch=1&allowWatchBookmarks=true"
               f"&resourceVersion={resource_version}&timeoutSeconds={timeout_seconds}")
        r = self._http.request("GET", url, headers=self._headers, preload_content=False,
                               timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 10))
        try:
            if r.status >= 300:
                raise KubeError(r.status, "WATCH", collection(kind), r.read().decode(errors="replace"))
            buf = b""
            for chunk in r.stream(64 * 1024):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            r.release_conn()
