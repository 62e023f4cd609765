"""deploy/: every manifest parses and validates offline; kustomizations build; CRDs are structural
and describe exactly the fields the server parses; the Deployment is wired the way the server runs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from tests.unit.deploy.kube_schema import instance_errors, structural_errors, validate
from xds_server._proto import istio_config_pb2 as pb
from xds_server.commands import inject
from xds_server.config.parse import parse

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def deploy_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def kube_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.relative_to(ROOT)}#{i}", d) for p in deploy_files() if p.name != "kustomization.yaml"
            for i, d in enumerate(load(p))]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in kube_objects() if d["kind"] == kind]


# ------------------------------------------------------------------ parse and validate


@pytest.mark.parametrize("path", [*deploy_files(), ROOT / "docker-compose.yml"], ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    assert load(path), f"{path} has no documents"


@pytest.mark.parametrize("where,doc", kube_objects(), ids=lambda v: v if isinstance(v, str) else "")
def test_kubernetes_object_validates_strictly(where: str, doc: dict[str, Any]) -> None:
    assert validate(doc) == [], where


def test_the_validator_is_strict() -> None:
    good = by_kind("Deployment")[0]

    def broken(edit: Any) -> dict[str, Any]:
        doc = yaml.safe_load(yaml.safe_dump(good))
        edit(doc)
        return doc

    pod = ("spec", "template", "spec")

    def at(doc: dict[str, Any], *path: str) -> Any:
        for key in path:
            doc = doc[key]
        return doc

    cases = {
        "unknown field": lambda d: at(d, *pod).update(terminationGracePeriod=30),
        "wrong type": lambda d: at(d, *pod).update(terminationGracePeriodSeconds="30"),
        "required name": lambda d: at(d, *pod, "containers")[0].pop("name"),
        "env fieldPath": lambda d: at(d, *pod, "containers")[0].update(
            env=[{"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}]),
        "port name": lambda d: at(d, *pod, "containers")[0]["ports"][0].update(name="grpc-xds-is-too-long"),
        "duplicate container": lambda d: at(d, *pod, "containers").append(at(d, *pod, "containers")[0]),
    }
    assert validate(good) == []
    for what, edit in cases.items():
        assert validate(broken(edit)), what


def test_every_file_is_in_a_kustomization() -> None:
    listed: set[Path] = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = load(kustomization)[0]
        assert spec["kind"] == "Kustomization"
        assert set(spec) <= {"apiVersion", "kind", "resources", "images", "labels", "namespace"}
        for resource in spec["resources"]:
            path = (kustomization.parent / resource).resolve()
            assert path.exists(), f"{kustomization}: {resource} does not exist"
            listed.add(path)
    missing = [p for p in deploy_files() if p.name != "kustomization.yaml" and p.resolve() not in listed]
    assert missing == []


def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def test_kustomize_builds_the_server_and_the_crds_separately() -> None:
    server, crds = _kustomize(DEPLOY), _kustomize(DEPLOY / "crds")
    files = {_key(d): d for _, d in kube_objects()}
    assert {_key(d) for d in crds} == {k for k in files if k[0] == "CustomResourceDefinition"}
    # the server install never carries CRDs: it goes next to Istio's as it is
    assert {_key(d) for d in server} == {k for k in files if k[0] != "CustomResourceDefinition"}
    for doc in server + crds:
        assert validate(doc) == [], _key(doc)


# ------------------------------------------------------------------ the server's wiring


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_deployment_runs_the_kubernetes_source_with_probes_and_a_longer_grace_than_the_drain() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[0] == "serve" and "--kubernetes" in args
    assert _flag(args, "--xds-address") == "0.0.0.0:15010"
    assert _flag(args, "--admin-address") == "0.0.0.0:15014"  # probes come from the kubelet, not loopback
    assert spec["terminationGracePeriodSeconds"] > float(_flag(args, "--drain-seconds")) + 5
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc-xds": 15010, "http-admin": 15014}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    (account,) = by_kind("ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert deployment["metadata"]["namespace"] == account["metadata"]["namespace"] == "xds-system"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # one image for the server and the injected istio-init container
    assert container["image"] == inject.DEFAULT_INIT_IMAGE


def test_service_exposes_xds_and_admin_to_the_injected_sidecars() -> None:
    (service,) = by_kind("Service")
    (deployment,) = by_kind("Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {15010: "grpc-xds", 15014: "http-admin"}
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    # what `xds-server inject` points Envoys at by default
    assert inject.Options().xds_address == f"{name}.{namespace}.svc:15010"


def test_pdb_selects_the_server() -> None:
    (pdb,) = by_kind("PodDisruptionBudget")
    (deployment,) = by_kind("Deployment")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert deployment["spec"]["replicas"] > pdb["spec"]["maxUnavailable"]


def test_replicas_spread_over_nodes_and_rebalance() -> None:
    """docs/deploy.md (replicas): two or more replicas, never fewer than all during a rollout, spread
    over nodes, and --max-connection-age so that Envoys spread again after one restarts."""
    (deployment,) = by_kind("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert [(c["topologyKey"], c["labelSelector"]) for c in pod["topologySpreadConstraints"]] == [
        ("kubernetes.io/hostname", spec["selector"])]
    args = pod["containers"][0]["args"]
    assert float(args[args.index("--max-connection-age") + 1]) > 0
    assert pod["terminationGracePeriodSeconds"] > float(args[args.index("--drain-seconds") + 1])


# ------------------------------------------------------------------ CRDs


def crds() -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d for d in by_kind("CustomResourceDefinition")}


def test_crds_are_the_istio_kinds_the_server_watches() -> None:
    from xds_server.sources.kube_kinds import DESTINATION_RULE, SERVICE_ENTRY, SIDECAR, VIRTUAL_SERVICE

    found = crds()
    assert set(found) == {"Sidecar", "ServiceEntry", "VirtualService", "DestinationRule"}
    for spec in (SIDECAR, SERVICE_ENTRY, VIRTUAL_SERVICE, DESTINATION_RULE):
        crd = found[spec.kind]
        assert crd["metadata"]["name"] == f"{spec.plural}.{spec.group}"
        assert crd["spec"]["group"] == spec.group and crd["spec"]["names"]["plural"] == spec.plural
        assert crd["spec"]["scope"] == "Namespaced"
        versions = {v["name"]: v for v in crd["spec"]["versions"]}
        assert set(spec.versions) <= set(versions) and set(versions) == {"v1", "v1beta1", "v1alpha3"}
        assert [v for v, body in versions.items() if body["storage"]] == ["v1"]
        assert all(body["served"] for body in versions.values())
        schemas = [body["schema"]["openAPIV3Schema"] for body in versions.values()]
        assert all(s == schemas[0] for s in schemas)  # one shape in every version, as Istio's


def test_crd_schemas_are_structural() -> None:
    for kind, crd in crds().items():
        for version in crd["spec"]["versions"]:
            assert list(structural_errors(version["schema"]["openAPIV3Schema"])) == [], (kind, version["name"])


def test_structural_check_catches_a_missing_type() -> None:
    bad = {"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}}
    assert any("needs a type" in e for e in structural_errors(bad))
    assert any("additionalProperties" in e for e in structural_errors(
        {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}))


_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BOOL: "boolean",
    FieldDescriptor.TYPE_INT32: "integer", FieldDescriptor.TYPE_UINT32: "integer",
    FieldDescriptor.TYPE_INT64: "integer", FieldDescriptor.TYPE_UINT64: "integer", FieldDescriptor.TYPE_ENUM: "string",
    FieldDescriptor.TYPE_DOUBLE: "number", FieldDescriptor.TYPE_BYTES: "string",
}


def _compare(descriptor: Descriptor, schema: dict[str, Any], path: str) -> list[str]:
    """The schema has exactly the message's fields (JSON names) with matching types, recursively."""
    problems = []
    props = schema.get("properties", {})
    fields = {f.json_name: f for f in descriptor.fields}
    if set(props) != set(fields):
        problems.append(f"{path}: schema {sorted(props)} != proto {sorted(fields)}")
    for name, field in fields.items():
        sub = props.get(name)
        if sub is None:
            continue
        here = f"{path}.{name}"
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not is_map:
            if sub.get("type") != "array":
                problems.append(f"{here}: expected an array")
                continue
            sub = sub["items"]
        if is_map:
            value = field.message_type.fields_by_name["value"]
            if value.message_type is not None:
                if sub.get("type") != "object" or sub["additionalProperties"].get("type") != "object":
                    problems.append(f"{here}: expected a map of objects")
                else:
                    problems += _compare(value.message_type, sub["additionalProperties"], f"{here}[]")
            elif sub.get("type") != "object" or sub["additionalProperties"].get("type") != _SCALARS[value.type]:
                problems.append(f"{here}: expected a map of {_SCALARS[value.type]}")
        elif field.message_type is not None and field.message_type.full_name == "google.protobuf.Duration":
            if sub.get("type") != "string":
                problems.append(f"{here}: a duration is a string")
        elif field.message_type is not None:
            if sub.get("type") != "object":
                problems.append(f"{here}: expected an object")
            else:
                problems += _compare(field.message_type, sub, here)
        else:
            if sub.get("type") != _SCALARS[field.type]:
                problems.append(f"{here}: expected {_SCALARS[field.type]}, got {sub.get('type')}")
            if field.type == FieldDescriptor.TYPE_ENUM and sub.get("enum") != [v.name for v in field.enum_type.values]:
                problems.append(f"{here}: enum {sub.get('enum')} != {[v.name for v in field.enum_type.values]}")
    return problems


@pytest.mark.parametrize("kind,message", [("Sidecar", pb.Sidecar), ("ServiceEntry", pb.ServiceEntry),
                                          ("VirtualService", pb.VirtualService),
                                          ("DestinationRule", pb.DestinationRule)])
def test_crd_schema_has_exactly_the_fields_the_server_parses(kind: str, message: Any) -> None:
    schema = crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(schema["properties"]) == {"spec", "status"}
    assert _compare(message.DESCRIPTOR, schema["properties"]["spec"], "spec") == []


def _istio_documents() -> list[tuple[str, dict[str, Any]]]:
    paths = [*ROOT.glob("tests/**/*.yaml"), *ROOT.glob("examples/**/*.yaml"),
             *ROOT.glob("xds_server/commands/demo_mesh/*.yaml")]
    out = []
    for path in sorted(paths):
        try:
            docs = load(path)
        except yaml.YAMLError:
            continue
        for i, doc in enumerate(docs):
            if isinstance(doc, dict) and doc.get("kind") in crds() and str(
                    doc.get("apiVersion", "")).startswith("networking.istio.io/"):
                out.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return out


def test_every_manifest_the_server_accepts_passes_the_crd_schema() -> None:
    """The CRDs are never stricter than the server (and prune nothing it reads)."""
    checked = 0
    schemas = {kind: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for kind, crd in crds().items()}
    for where, doc in _istio_documents():
        obj, problems = parse(doc, where)
        if obj is None or any(not p.warning for p in problems):
            continue
        assert list(instance_errors({"spec": doc.get("spec") or {}}, schemas[doc["kind"]])) == [], where
        checked += 1
    assert checked >= 10


def test_generated_crds_are_fresh() -> None:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "scripts" / "gen_crds.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path, text in gen.targets().items():
        assert path.read_text() == text, f"{path} is stale: run `python scripts/gen_crds.py` and commit the result"


def test_crd_schema_rejects_typos_the_api_server_would_prune() -> None:
    schema = crds()["Sidecar"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    doc = {"spec": {"egress": [{"hosts": ["./*"], "captureMod": "NONE"}], "outboundTrafficPolicy": {"mode": "ANY"}}}
    errors = list(instance_errors(doc, schema))
    assert any("captureMod" in e for e in errors) and any("'ANY'" in e for e in errors)
    assert any("hosts: required" in e for e in instance_errors({"spec": {"egress": [{}]}}, schema))
