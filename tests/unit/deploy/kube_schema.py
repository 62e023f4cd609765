"""Offline validation of Kubernetes manifests, strict like `kubectl apply --validate=strict`.

Objects are walked against the official client's models (`kubernetes.client.models`): every key
must be a field of the model (`attribute_map`), every value of the field's type
(`openapi_types`), and deserialising through `ApiClient` then enforces required fields. A few
API-server rules the models do not carry are checked on pods (container names, port names, env
fieldRefs). CRDs are also checked to be structural, and custom objects are validated against a
CRD's schema (the OpenAPI subset CRDs use).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import kubernetes.client
from kubernetes.client import ApiClient

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA_SVC_NAME, <= 15 chars
# pkg/apis/core/validation: validEnvDownwardAPIFieldPathExpressions (+ labels/annotations subscripts)
ENV_FIELD_PATHS = {
    "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
    "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
}
_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")  # the client spells list[X] or List[X] by version
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")


def model_name(api_version: str, kind: str) -> str:
    version = api_version.rpartition("/")[2]
    return version[:1].upper() + version[1:] + kind


def model_class(api_version: str, kind: str) -> type:
    name = model_name(api_version, kind)
    cls = getattr(kubernetes.client, name, None)
    if cls is None:
        raise KeyError(f"no model {name} for {api_version} {kind}")
    return cls


def _type_errors(value: Any, type_name: str, path: str) -> Iterator[str]:
    if value is None:
        return
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            yield f"{path}: expected a list, got {type(value).__name__}"
            return
        for i, item in enumerate(value):
            yield from _type_errors(item, m.group(1), f"{path}[{i}]")
        return
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            yield f"{path}: expected a map, got {type(value).__name__}"
            return
        for key, item in value.items():
            if not isinstance(key, str):
                yield f"{path}: key {key!r} is not a string"
            yield from _type_errors(item, m.group(1) or m.group(2), f"{path}.{key}")
        return
    simple: dict[str, tuple[type, ...]] = {
        "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
        "datetime": (str,), "date": (str,), "bytes": (str,),
    }
    if type_name in simple:
        ok = isinstance(value, simple[type_name]) and not (type_name in ("int", "float") and isinstance(value, bool))
        if not ok:
            yield f"{path}: expected {type_name}, got {type(value).__name__} {value!r}"
        return
    if type_name == "object":  # IntOrString, RawExtension, JSON: anything
        return
    cls = getattr(kubernetes.client, type_name)
    yield from model_errors(value, cls, path)


def model_errors(doc: Any, cls: type, path: str = "") -> Iterator[str]:
    """Unknown fields and wrong types, recursively (the model's own view of the schema)."""
    if not isinstance(doc, dict):
        yield f"{path or '.'}: expected an object, got {type(doc).__name__}"
        return
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, value in doc.items():
        here = f"{path}.{key}" if path else key
        attr = by_json.get(key)
        if attr is None:
            yield f"{here}: unknown field (not in {cls.__name__})"
            continue
        yield from _type_errors(value, cls.openapi_types[attr], here)


def _pod_spec_errors(spec: dict[str, Any], path: str) -> Iterator[str]:
    containers = list(spec.get("containers") or [])
    inits = list(spec.get("initContainers") or [])
    names = [c.get("name") for c in containers + inits]
    for name in names:
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            yield f"{path}: container name {name!r} is not a DNS-1123 label"
    if len(set(names)) != len(names):
        yield f"{path}: duplicate container names {names}"
    for where, group in (("containers", containers), ("initContainers", inits)):
        for i, c in enumerate(group):
            here = f"{path}.{where}[{i}]"
            if not c.get("image"):
                yield f"{here}.image: required"
            port_names = [p.get("name") for p in c.get("ports") or [] if p.get("name")]
            for name in port_names:
                if len(name) > 15 or not _PORT_NAME.match(name):
                    yield f"{here}.ports: {name!r} is not an IANA_SVC_NAME"
            for env in c.get("env") or []:
                ref = ((env.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                subscripted = re.match(r"^metadata\.(labels|annotations)\['.+'\]$", ref or "")
                if ref and ref not in ENV_FIELD_PATHS and not subscripted:
                    yield f"{here}.env.{env.get('name')}: fieldPath {ref!r} is not allowed in env"
            if where == "initContainers" and c.get("restartPolicy") not in (None, "Always"):
                yield f"{here}.restartPolicy: only Always is allowed"
            if where == "containers" and "restartPolicy" in c:
                yield f"{here}.restartPolicy: only init containers may set it"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if where == "initContainers" and probe in c and c.get("restartPolicy") != "Always":
                    yield f"{here}.{probe}: only restartable init containers may have probes"


POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def validate(doc: dict[str, Any]) -> list[str]:
    """Every problem with one manifest; [] if the API server would take it (as far as offline goes)."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind are required"]
    try:
        cls = model_class(api_version, kind)
    except KeyError as e:
        return [str(e)]
    problems = list(model_errors(doc, cls))
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    if kind in POD_SPEC_PATHS:
        spec: Any = doc
        for key in POD_SPEC_PATHS[kind]:
            spec = (spec or {}).get(key)
        if isinstance(spec, dict):
            problems += _pod_spec_errors(spec, ".".join(POD_SPEC_PATHS[kind]))
    if kind == "CustomResourceDefinition":
        for version in (doc.get("spec") or {}).get("versions") or []:
            schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
            problems += [f"{version.get('name')}: {p}" for p in structural_errors(schema)]
    if not problems:
        try:  # required fields and the client's own value checks
            ApiClient()._ApiClient__deserialize(doc, cls.__name__)  # type: ignore[attr-defined]
        except (ValueError, TypeError) as e:
            problems.append(f"{cls.__name__}: {e}")
    return problems


# ------------------------------------------------------------------------------- CRDs

_SCHEMA_KEYS = {
    "type", "description", "properties", "additionalProperties", "items", "required", "enum", "format",
    "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "pattern", "default", "nullable",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-validations",
}
_JUNCTORS = {"allOf", "anyOf", "oneOf", "not"}


def structural_errors(schema: Any, path: str = "openAPIV3Schema") -> Iterator[str]:
    """Kubernetes' structural-schema rules for the subset this project uses (no junctors)."""
    if not isinstance(schema, dict):
        yield f"{path}: a schema must be an object"
        return
    for key in schema:
        if key in _JUNCTORS:
            yield f"{path}.{key}: not used by this project's CRDs (keep schemas junctor-free)"
        elif key not in _SCHEMA_KEYS:
            yield f"{path}.{key}: unknown schema keyword"
    typ = schema.get("type")
    loose = schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string")
    if not typ and not loose:
        yield f"{path}: every node needs a type"
    if typ not in (None, "object", "array", "string", "integer", "number", "boolean"):
        yield f"{path}.type: {typ!r}"
    if "properties" in schema and "additionalProperties" in schema:
        yield f"{path}: properties and additionalProperties are mutually exclusive"
    if typ == "array" and "items" not in schema:
        yield f"{path}: an array needs items"
    if typ != "array" and "items" in schema:
        yield f"{path}: items on a non-array"
    if ("properties" in schema or "additionalProperties" in schema) and typ != "object":
        yield f"{path}: properties on a non-object"
    for name in schema.get("required") or []:
        if name not in (schema.get("properties") or {}):
            yield f"{path}.required: {name!r} is not a property"
    for name, sub in (schema.get("properties") or {}).items():
        if path == "openAPIV3Schema" and name == "metadata" and set(sub) - {"type"}:
            yield f"{path}.properties.metadata: only type may be given at the root"
        yield from structural_errors(sub, f"{path}.properties.{name}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from structural_errors(extra, f"{path}.additionalProperties")
    elif extra is not None and extra is not False:
        yield f"{path}.additionalProperties: must be a schema (or false)"
    if "items" in schema:
        yield from structural_errors(schema["items"], f"{path}.items")


def instance_errors(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """What the API server would reject (or prune: unknown fields) in a custom object."""
    typ = schema.get("type")
    if value is None:
        if not schema.get("nullable"):
            yield f"{path}: null"
        return
    if schema.get("x-kubernetes-preserve-unknown-fields") and typ in (None, "object"):
        return
    checks = {"object": dict, "array": list, "string": str, "boolean": bool}
    if typ in checks and not isinstance(value, checks[typ]):
        yield f"{path}: expected {typ}, got {type(value).__name__}"
        return
    if typ in ("integer", "number"):
        ok = isinstance(value, int) if typ == "integer" else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            yield f"{path}: expected {typ}, got {type(value).__name__}"
            return
        if "minimum" in schema and value < schema["minimum"]:
            yield f"{path}: {value} < minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"{path}: {value} > maximum {schema['maximum']}"
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: {value!r} not in {schema['enum']}"
    if typ == "array":
        if len(value) < schema.get("minItems", 0):
            yield f"{path}: fewer than {schema['minItems']} items"
        for i, item in enumerate(value):
            yield from instance_errors(item, schema["items"], f"{path}[{i}]")
    if typ == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name in schema.get("required") or []:
            if name not in value:
                yield f"{path}.{name}: required"
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if props is not None and key in props:
                yield from instance_errors(item, props[key], here)
            elif isinstance(extra, dict):
                yield from instance_errors(item, extra, here)
            elif props is not None or extra is False:
                yield f"{here}: unknown field (the API server would prune it)"
