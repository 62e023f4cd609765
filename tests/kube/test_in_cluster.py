"""`xds-server serve --kubernetes` in-cluster: started with what a pod of deploy/'s Deployment
gets (KUBERNETES_SERVICE_HOST/PORT, the service-account token, CA and namespace files; the files
in a directory named by XDS_SERVER_SERVICE_ACCOUNT_DIR instead of the kubelet's mount point), with
the Deployment's own arguments, against the real apiserver. And the clear exit 2 when it is not
in a pod, or the kubeconfig is broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kube.deployed import NAMESPACE
from tests.kube.envtest import EnvTest
from tests.kube.serve import ServeProcess
from tests.kube.source_harness import service_entry, sidecar
from xds_server.cli import build_parser
from xds_server.commands.serve import check_kubernetes, settings_from_args
from xds_server.sources.kubernetes import SERVICE_ACCOUNT_DIR_ENV

LOCAL_FLAGS = {"--xds-address", "--admin-address", "--drain-seconds"}  # replaced by ServeProcess's own


def deployment_args(kube_api: EnvTest) -> list[str]:
    """The xds-server container's arguments, as applied from deploy/, minus the listen addresses
    and drain time (the test's own)."""
    deployment = kube_api.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/xds-server")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args, out = list(container["args"]), []
    assert args[0] == "serve"
    it = iter(args[1:])
    for arg in it:
        if arg in LOCAL_FLAGS:
            next(it)
        else:
            out.append(arg)
    return out


def pod_environment(kube_api: EnvTest, token: str, directory: Path) -> dict[str, str]:
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(kube_api.ca_file.read_bytes())
    (directory / "namespace").write_text(NAMESPACE)
    return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube_api.apiserver_port),
            SERVICE_ACCOUNT_DIR_ENV: str(directory)}


def test_in_cluster_with_the_deployments_arguments_syncs(
    kube_api: EnvTest, deployed: str, kube_namespace: str, tmp_path: Path
) -> None:
    kube_api.create(sidecar("default", kube_namespace))
    kube_api.create(service_entry("ext", kube_namespace))
    args = deployment_args(kube_api)
    assert "--kubernetes" in args and "--kubeconfig" not in args
    env = pod_environment(kube_api, deployed, tmp_path / "serviceaccount")
    env.pop("KUBECONFIG", None)
    with ServeProcess(*args, env=env) as server:
        server.wait_ready()
        assert server.objects(kube_namespace) == {"Sidecar/default", "ServiceEntry/ext"}
        kube_api.create(service_entry("late", kube_namespace, "late.example.com"))
        kube_api.wait_for(lambda: "ServiceEntry/late" in server.objects(kube_namespace), 10, "a watched object")
        assert server.stop() == 0
        records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        assert any("initial sync complete" in r.get("message", r.get("msg", "")) for r in records), records[:5]
        assert not [r for r in records if r.get("level") in ("ERROR", "error")], records


def test_not_in_a_pod_is_a_clear_exit_2() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_") and k != SERVICE_ACCOUNT_DIR_ENV}
    proc = subprocess.run([sys.executable, "-m", "xds_server", "serve", "--kubernetes", "--admin-address=127.0.0.1:0",
                           "--xds-address=127.0.0.1:0"], env=clean, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def problem(*args: str) -> str | None:
    """What `serve` would exit 2 with, checked in this process (the exit itself is tested above)."""
    return check_kubernetes(settings_from_args(build_parser().parse_args(["serve", *args])))


@pytest.mark.parametrize(("env", "files", "message"), [
    ({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": ""}, ("token", "ca.crt"),
     "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"),
    ({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, (), "no service-account token in"),
    ({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, ("token",),
     "no service-account ca.crt in"),
], ids=["empty-port", "no-token", "no-ca"])
def test_an_incomplete_pod_environment_is_named(
    env: dict[str, str], files: tuple[str, ...], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in files:
        (tmp_path / name).write_text("x")
    for key, value in {**env, SERVICE_ACCOUNT_DIR_ENV: str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    found = problem("--kubernetes")
    assert found is not None and message in found, found


@pytest.mark.parametrize("text", ["garbage: [", "- a list", "clusters: 3", "apiVersion: v1"])
def test_a_broken_kubeconfig_is_named(text: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)
    found = problem("--kubeconfig", str(kubeconfig))
    assert found is not None and found.startswith(f"cannot load kubeconfig {kubeconfig}: "), found
