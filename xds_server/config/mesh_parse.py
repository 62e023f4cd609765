"""MeshConfig from `--mesh-config FILE` or from ConfigMap `istio` (key `mesh`).

Only the subset in model/mesh.py is read; Istio's MeshConfig has hundreds of other fields, which
are ignored with one warning rather than rejected, so that a real istiod mesh config loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

from xds_server.config.mesh import ALLOW_ANY, REGISTRY_ONLY, MeshConfig
from xds_server.config.refs import Kind, ObjectMeta, ObjectRef, Problem
from xds_server.config.validate_fields import Report, describe_yaml_error, join, type_name
from xds_server.config.validate_names import is_dns1123_label, k8s_label_error
from xds_server.config.validate_schema import parse_duration_ns

# Same value as store.view.MESH_FILE_NAME (the model layer does not import the store).
MESH_FILE_NAME = "mesh-config-file"

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OUTBOUND_MODES = (ALLOW_ANY, REGISTRY_ONLY)
_INBOUND_MODES = ("PASSTHROUGH", "LOCALHOST")
_MS = 10**6


def parse_mesh_config(
    source: str | bytes | Mapping[str, Any] | None, where: str = "", *, name: str = MESH_FILE_NAME
) -> tuple[MeshConfig | None, list[Problem]]:
    """A bare MeshConfig document (no kind, or kind MeshConfig); empty means all defaults."""
    report = Report(where, ObjectRef(Kind.MESH_CONFIG, "", name))
    try:
        doc = yaml.load(source, Loader=_LOADER) if isinstance(source, str | bytes) else source
    except yaml.YAMLError as exc:
        report.error("", f"invalid YAML: {describe_yaml_error(exc)}")
        return None, report.problems
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        report.error("", f"a MeshConfig document must be an object, got {type_name(doc)}")
        return None, report.problems
    kind = doc.get("kind")
    if kind is not None and kind != "MeshConfig":
        report.error("kind", f"expected MeshConfig (or no kind), got {kind!r}")
        return None, report.problems
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    mesh = mesh_from_mapping(body, ObjectMeta(name=name), report, "")
    return (None if report.failed else mesh), report.problems


def mesh_from_configmap(doc: Mapping[str, Any], meta: ObjectMeta, report: Report) -> MeshConfig | None:
    """ConfigMap `istio`: its `data.mesh` is MeshConfig YAML."""
    data = report.mapping(doc, "data", "")
    text = data.get("mesh")
    if text is None:
        report.warn("data.mesh", "missing; this ConfigMap carries no MeshConfig and is ignored")
        return None
    if not isinstance(text, str):
        report.error("data.mesh", f"expected a string of MeshConfig YAML, got {type_name(text)}")
        return None
    try:
        body = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        report.error("data.mesh", f"invalid YAML: {describe_yaml_error(exc)}")
        return None
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        report.error("data.mesh", f"expected a MeshConfig object, got {type_name(body)}")
        return None
    return mesh_from_mapping(body, meta, report, "data.mesh")


def mesh_from_mapping(doc: Mapping[str, Any], meta: ObjectMeta, report: Report, path: str) -> MeshConfig:
    """Read the supported subset; report bad values; warn once about ignored fields."""
    defaults = MeshConfig()
    ignored: list[str] = []
    values: dict[str, Any] = {}
    for key in doc:
        if not isinstance(key, str):
            report.error(path, f"field names must be strings, got {type_name(key)} {key!r}")
        elif key not in _READERS:
            ignored.append(join(path, key))
    for key, reader in _READERS.items():
        if doc.get(key) is not None:
            reader(doc, key, join(path, key), report, values, ignored)
    if ignored:
        report.warn("", f"{', '.join(ignored)}: not used by xds-server; ignored")
    out = MeshConfig(meta=meta)
    fields = {f: values.get(f, getattr(defaults, f)) for f in _FIELDS}
    return type(out)(meta=meta, **fields)


# ---------------------------------------------------------------- field readers
# reader(doc, key, path, report, values, ignored): checks doc[key], stores into values, notes ignored fields.
Reader = Callable[[Mapping[str, Any], str, str, Report, dict[str, Any], list[str]], None]


def _root_namespace(doc: Mapping[str, Any], key: str, path: str, report: Report, values: dict[str, Any],
                    ignored: list[str]) -> None:
    value = report.string(doc, key, "")
    if value and report.check(path, k8s_label_error(value)):
        values["root_namespace"] = value


def _mode_reader(field: str, allowed: tuple[str, ...]) -> Reader:
    """allowed[0] is the enum's zero value (REGISTRY_ONLY, PASSTHROUGH), what `{}` means."""

    def read(doc: Mapping[str, Any], key: str, path: str, report: Report, values: dict[str, Any],
             ignored: list[str]) -> None:
        policy = doc[key]
        if not isinstance(policy, Mapping):
            report.error(path, f"expected an object, got {type_name(policy)}")
            return
        ignored.extend(join(path, str(k)) for k in policy if k != "mode")
        mode = policy.get("mode")
        if mode is None:
            values[field] = allowed[0]  # an empty policy is the enum's zero value
            return
        if mode not in allowed:
            report.error(f"{path}.mode", f"unknown value {mode!r} (one of {', '.join(allowed)})")
            return
        values[field] = mode

    return read


def _duration_reader(field: str, zero_ok: bool, max_s: float | None = None) -> Reader:
    def read(doc: Mapping[str, Any], key: str, path: str, report: Report, values: dict[str, Any],
             ignored: list[str]) -> None:
        text = doc[key]
        ns = parse_duration_ns(text) if isinstance(text, str) else None
        if ns is None:
            report.error(path, f'expected a duration such as "10s" or "100ms", got {text!r}')
        elif ns % _MS:
            report.error(path, "only durations to ms precision are supported")
        elif ns < _MS and not (zero_ok and ns == 0):
            report.error(path, "duration must be at least 1ms")
        elif max_s is not None and ns > max_s * 10**9:
            report.error(path, f"duration must be at most {max_s:g}s")
        else:
            values[field] = ns / 10**9

    return read


def _export_to_reader(field: str) -> Reader:
    def read(doc: Mapping[str, Any], key: str, path: str, report: Report, values: dict[str, Any],
             ignored: list[str]) -> None:
        entries = report.strings(doc, key, "")
        ok = True
        for i, entry in enumerate(entries):
            if entry not in ("*", ".", "~") and not is_dns1123_label(entry):
                report.error(f"{path}[{i}]", f"invalid exportTo value {entry!r} (one of *, ., ~ or a namespace)")
                ok = False
        if ok and entries:
            values[field] = tuple(entries)

    return read


def _trust_domain(doc: Mapping[str, Any], key: str, path: str, report: Report, values: dict[str, Any],
                  ignored: list[str]) -> None:
    value = doc[key]
    if not isinstance(value, str) or not value:
        report.error(path, f"expected a non-empty string, got {value!r}")
        return
    labels = value.split(".")
    if labels[-1] == "":
        labels = labels[:-1]
    if not labels or not all(is_dns1123_label(label) for label in labels):
        report.error(path, f"trust domain {value!r} is invalid")
        return
    values["trust_domain"] = value


_READERS: dict[str, Reader] = {
    "rootNamespace": _root_namespace,
    "outboundTrafficPolicy": _mode_reader("outbound_traffic_policy", (REGISTRY_ONLY, ALLOW_ANY)),
    "connectTimeout": _duration_reader("connect_timeout_s", zero_ok=False, max_s=3600),
    "inboundTrafficPolicy": _mode_reader("inbound_traffic_policy", _INBOUND_MODES),
    "defaultServiceExportTo": _export_to_reader("default_service_export_to"),
    "defaultVirtualServiceExportTo": _export_to_reader("default_virtual_service_export_to"),
    "defaultDestinationRuleExportTo": _export_to_reader("default_destination_rule_export_to"),
    "protocolDetectionTimeout": _duration_reader("protocol_detection_timeout_s", zero_ok=True),
    "dnsRefreshRate": _duration_reader("dns_refresh_rate_s", zero_ok=False),
    "trustDomain": _trust_domain,
}
_FIELDS = (
    "root_namespace",
    "outbound_traffic_policy",
    "connect_timeout_s",
    "inbound_traffic_policy",
    "default_service_export_to",
    "default_virtual_service_export_to",
    "default_destination_rule_export_to",
    "protocol_detection_timeout_s",
    "dns_refresh_rate_s",
    "trust_domain",
)
