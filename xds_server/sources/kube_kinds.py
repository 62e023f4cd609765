"""What the Kubernetes source watches, and how the official client asks the API server for it.

A `WatchTarget` is one list-then-watch stream: one kind, in one namespace or in all of them.
Requests go through the generated client methods with `_preload_content=False`, so the source
reads raw JSON (camelCase, as the API server sends it) and never depends on the client's model
classes, which do not exist for Istio's CRDs anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

ISTIO_GROUP = "networking.istio.io"
# What the service account needs on every watched kind (deploy/rbac.yaml, checked against a real
# API server by tests/kube/test_deploy.py): the reflectors list and watch; get reads nothing a
# list does not, and is what `kubectl get` and client-go informers conventionally come with.
READ_VERBS = ("get", "list", "watch")
MESH_CONFIGMAP = "istio"  # ConfigMap `istio`, key `mesh`, in the root namespace


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str  # as in manifests, and what parse() dispatches on
    group: str  # "" for the core group
    versions: tuple[str, ...]  # preferred first; later ones are fallbacks for older installs
    plural: str
    namespaced: bool

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


POD = KindSpec("Pod", "", ("v1",), "pods", True)
SERVICE = KindSpec("Service", "", ("v1",), "services", True)
NAMESPACE = KindSpec("Namespace", "", ("v1",), "namespaces", False)
CONFIG_MAP = KindSpec("ConfigMap", "", ("v1",), "configmaps", True)
SIDECAR = KindSpec("Sidecar", ISTIO_GROUP, ("v1", "v1beta1"), "sidecars", True)
SERVICE_ENTRY = KindSpec("ServiceEntry", ISTIO_GROUP, ("v1", "v1beta1"), "serviceentries", True)
VIRTUAL_SERVICE = KindSpec("VirtualService", ISTIO_GROUP, ("v1", "v1beta1"), "virtualservices", True)
DESTINATION_RULE = KindSpec("DestinationRule", ISTIO_GROUP, ("v1", "v1beta1"), "destinationrules", True)

# (all namespaces, one namespace) list methods of CoreV1Api, by plural.
_CORE_LISTS: dict[str, tuple[str, str | None]] = {
    "pods": ("list_pod_for_all_namespaces", "list_namespaced_pod"),
    "services": ("list_service_for_all_namespaces", "list_namespaced_service"),
    "configmaps": ("list_config_map_for_all_namespaces", "list_namespaced_config_map"),
    "namespaces": ("list_namespace", None),
}


@dataclass(frozen=True, slots=True)
class WatchTarget:
    spec: KindSpec
    namespace: str | None = None  # None: every namespace (or a cluster-scoped kind)
    field_selector: str = ""

    @property
    def origin(self) -> str:
        """The store origin of everything this stream holds; a relist replaces exactly it."""
        scope = self.field_selector.removeprefix("metadata.name=") if not self.spec.namespaced else ""
        return f"kubernetes/{self.spec.kind}/{self.namespace or scope or '*'}"

    def describe(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        if not self.spec.namespaced:
            where = "the cluster"
        sel = f" ({self.field_selector})" if self.field_selector else ""
        return f"{self.spec.plural}.{self.spec.group or 'core'} in {where}{sel}"

    def request(self, api: ApiClient, version: str, **params: Any) -> Any:
        """One list or watch request; returns the raw urllib3 response (raises ApiException)."""
        if self.field_selector:
            params["field_selector"] = self.field_selector
        params["_preload_content"] = False
        spec = self.spec
        if not spec.group:
            core = CoreV1Api(api)
            every, one = _CORE_LISTS[spec.plural]
            if one is not None and self.namespace is not None:
                return getattr(core, one)(self.namespace, **params)
            return getattr(core, every)(**params)
        custom = CustomObjectsApi(api)
        if self.namespace is not None:
            return custom.list_namespaced_custom_object(spec.group, version, self.namespace, spec.plural, **params)
        return custom.list_cluster_custom_object(spec.group, version, spec.plural, **params)


def required_permissions(namespaces: Sequence[str] = (), root_namespace: str = "istio-system") -> dict[
    tuple[str, str], tuple[str, ...]
]:
    """(API group, plural) -> verbs, for everything the source watches."""
    return {(t.spec.group, t.spec.plural): READ_VERBS for t in watch_targets(namespaces, root_namespace)}


def watch_targets(namespaces: Sequence[str], root_namespace: str) -> list[WatchTarget]:
    """One target per kind, or per kind and namespace when the watch is restricted.

    Namespace objects of a restricted watch are fetched by name (a field selector), so the
    source never sees the rest of the cluster. The mesh ConfigMap is read from the root
    namespace whatever the restriction: it configures the whole mesh.
    """
    kinds = (POD, SERVICE, SIDECAR, SERVICE_ENTRY, VIRTUAL_SERVICE, DESTINATION_RULE)
    mesh = WatchTarget(CONFIG_MAP, root_namespace, f"metadata.name={MESH_CONFIGMAP}")
    if not namespaces:
        return [*(WatchTarget(k) for k in kinds), WatchTarget(NAMESPACE), mesh]
    out: list[WatchTarget] = []
    for ns in dict.fromkeys(namespaces):  # de-duplicated, order kept
        out += [WatchTarget(k, ns) for k in kinds]
        out.append(WatchTarget(NAMESPACE, None, f"metadata.name={ns}"))
    out.append(mesh)
    return out
