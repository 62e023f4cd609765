"""parse(doc, where) -> (object | None, problems): the one entry point from raw manifests.

Accepted: networking.istio.io/{v1,v1beta1,v1alpha3} Sidecar, ServiceEntry, VirtualService and
DestinationRule; v1 Pod, Service,
Namespace; v1 ConfigMap `istio` (key `mesh`) as MeshConfig. Other networking.istio.io kinds get
a warning that they are ignored; anything else (Deployments, ...) is skipped silently, so that a
directory of ordinary manifests can be served as it is.

An object with any error is rejected (None); every problem names kind/namespace/name (when the
document has a name) and starts with the field path. Warnings never reject. Never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import ConfigObject, Problem
from xds_server.config.istio import IstioServiceEntry, IstioSidecar
from xds_server.config.mesh_parse import mesh_from_configmap, parse_mesh_config
from xds_server.config.parse_kube import parse_namespace, parse_pod, parse_service
from xds_server.config.refs import FrozenDict, Kind, ObjectMeta, ObjectRef
from xds_server.config.sidecar_inbound_tls import with_inbound_tls_applied
from xds_server.config.traffic_rules import IstioDestinationRule, IstioVirtualService
from xds_server.config.validate import validate
from xds_server.config.validate_fields import Report, type_name
from xds_server.config.validate_names import k8s_label_error, k8s_name_error
from xds_server.config.validate_schema import message_from_dict

__all__ = ["parse", "parse_mesh_config"]  # parse_mesh_config: for `--mesh-config FILE`

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
MESH_CONFIGMAP = "istio"
DEFAULT_NAMESPACE = "default"

_ISTIO_KINDS = {
    Kind.SIDECAR: (pb.Sidecar, IstioSidecar),
    Kind.SERVICE_ENTRY: (pb.ServiceEntry, IstioServiceEntry),
    Kind.VIRTUAL_SERVICE: (pb.VirtualService, IstioVirtualService),
    Kind.DESTINATION_RULE: (pb.DestinationRule, IstioDestinationRule),
}
_CORE_KINDS = (Kind.POD, Kind.SERVICE, Kind.NAMESPACE, "ConfigMap")


def parse(doc: Mapping[str, Any], where: str = "") -> tuple[ConfigObject | None, list[Problem]]:
    try:
        return _parse(doc, where)
    except Exception as exc:  # a bug here must not take a source down: reject the document
        return None, [Problem(_guess_ref(doc), f"document: could not be parsed ({exc!r})", where)]


def _parse(doc: Any, where: str) -> tuple[ConfigObject | None, list[Problem]]:
    if not isinstance(doc, Mapping):
        return None, [Problem(None, f"document: expected an object, got {type_name(doc)}", where)]
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind is None:
        return None, [Problem(None, "kind: required (every manifest needs apiVersion and kind)", where)]
    if not isinstance(kind, str) or not isinstance(api_version, str | None):
        bad = "kind" if not isinstance(kind, str) else "apiVersion"
        value = doc.get(bad)
        return None, [Problem(None, f"{bad}: expected a string, got {type_name(value)}", where)]
    group, _, version = (api_version or "").rpartition("/")
    if group == ISTIO_GROUP:
        if kind in _ISTIO_KINDS and version in ISTIO_VERSIONS:
            return _parse_istio(doc, Kind(kind), api_version or "", where)
        ref = _guess_ref(doc)
        message = f"kind: {api_version} {kind} is not supported by xds-server; ignored"
        return None, [Problem(ref, message, where, warning=True)]
    if kind == Kind.MESH_CONFIG:
        message = "kind: MeshConfig documents are read with --mesh-config, not from manifests; ignored"
        return None, [Problem(None, message, where, warning=True)]
    if group == "" and version == "v1" and kind in _CORE_KINDS:
        return _parse_core(doc, kind, where)
    return None, []


def _parse_istio(
    doc: Mapping[str, Any], kind: Kind, api_version: str, where: str
) -> tuple[ConfigObject | None, list[Problem]]:
    spec_cls, model = _ISTIO_KINDS[kind]
    report = Report(where)
    meta = _meta(doc, kind, report, namespaced=True)
    spec_doc = doc.get("spec")
    spec = message_from_dict({} if spec_doc is None else spec_doc, spec_cls, "spec", report)
    if meta is None or spec is None or report.failed:
        return None, report.problems
    obj = model(meta=meta, spec=spec, api_version=api_version)
    problems = report.problems + validate(obj, where)
    if any(not p.warning for p in problems):
        return None, problems
    if isinstance(obj, IstioSidecar):
        obj = with_inbound_tls_applied(obj)
    return obj, problems


def _parse_core(doc: Mapping[str, Any], kind: str, where: str) -> tuple[ConfigObject | None, list[Problem]]:
    report = Report(where)
    if kind == "ConfigMap":
        metadata = doc.get("metadata")
        if not isinstance(metadata, Mapping) or metadata.get("name") != MESH_CONFIGMAP:
            return None, []  # only ConfigMap `istio` means anything here
        meta = _meta(doc, Kind.MESH_CONFIG, report, namespaced=True)
        obj: ConfigObject | None = mesh_from_configmap(doc, meta, report) if meta else None
    else:
        meta = _meta(doc, kind, report, namespaced=kind != Kind.NAMESPACE)
        if meta is None:
            return None, report.problems
        if kind == Kind.POD:
            obj = parse_pod(doc, meta, report)
        elif kind == Kind.SERVICE:
            obj = parse_service(doc, meta, report)
        else:
            obj = parse_namespace(meta)
    return (None if report.failed else obj), report.problems


def _meta(doc: Mapping[str, Any], kind: str, report: Report, namespaced: bool) -> ObjectMeta | None:
    """ObjectMeta, with report.ref set first so that every later problem names the object."""
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping):
        report.error(
            "metadata", "required" if metadata is None else f"expected an object, got {type_name(metadata)}"
        )
        return None
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not namespaced:
        namespace = ""
    elif not isinstance(namespace, str) or not namespace:
        namespace = DEFAULT_NAMESPACE if namespace is None or namespace == "" else str(namespace)
    if isinstance(name, str) and name:
        report.ref = ObjectRef(kind, namespace, name)
    ok = True
    if name is None or name == "":
        report.error("metadata.name", "required")
        ok = False
    elif not isinstance(name, str):
        report.error("metadata.name", f"expected a string, got {type_name(name)}")
        ok = False
    elif not report.check(
        "metadata.name", k8s_label_error(name) if kind == Kind.NAMESPACE else k8s_name_error(name)
    ):
        ok = False
    raw_ns = metadata.get("namespace")
    if namespaced and raw_ns is not None:
        if not isinstance(raw_ns, str):
            report.error("metadata.namespace", f"expected a string, got {type_name(raw_ns)}")
            ok = False
        elif raw_ns and not report.check("metadata.namespace", k8s_label_error(raw_ns)):
            ok = False
    labels = report.string_map(metadata, "labels", "metadata") or {}
    annotations = report.string_map(metadata, "annotations", "metadata") or {}
    resource_version = metadata.get("resourceVersion")
    if isinstance(resource_version, int) and not isinstance(resource_version, bool):
        resource_version = str(resource_version)  # hand-written YAML often leaves it unquoted
    meta = ObjectMeta(
        name=name if isinstance(name, str) else "",
        namespace=namespace,
        labels=FrozenDict(labels),
        annotations=FrozenDict(annotations),
        creation_timestamp=report.string(metadata, "creationTimestamp", "metadata"),
        resource_version=report.string({"resourceVersion": resource_version}, "resourceVersion", "metadata"),
        uid=report.string(metadata, "uid", "metadata"),
    )
    return meta if ok and not report.failed else None


def _guess_ref(doc: Any) -> ObjectRef | None:
    """kind/namespace/name if the document has them, for problems found before full parsing."""
    try:
        kind, metadata = doc.get("kind"), doc.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if isinstance(kind, str) and kind and isinstance(name, str) and name:
            namespace = metadata.get("namespace")
            namespace = namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE
            return ObjectRef(kind, "" if kind == Kind.NAMESPACE else namespace, name)
    except Exception:
        pass
    return None
