"""`xds-server render` prints exactly what the golden harness renders, in config_dump shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xds_server.cli import main

GOLDEN = Path(__file__).parents[2] / "golden"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["render", *args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_render_all_matches_the_golden_file(capsys: pytest.CaptureFixture[str]) -> None:
    case = GOLDEN / "egress_task_registry_only"
    code, out, _ = run(capsys, "--config-dir", str(case / "input"), "--proxy", "sleep-1.default",
                       "--mesh-config", str(case / "mesh.yaml"))
    assert code == 0
    assert out == (case / "expected.json").read_text()


def test_render_one_type_in_config_dump_shape(capsys: pytest.CaptureFixture[str]) -> None:
    case = GOLDEN / "no_sidecar"
    code, out, _ = run(capsys, "--config-dir", str(case / "input"), "--proxy", "productpage-1.default", "--type", "lds")
    assert code == 0
    (dump,) = json.loads(out)["configs"]
    assert dump["@type"] == "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
    names = [d["name"] for d in dump["dynamic_listeners"]]
    assert names == sorted(names) and "virtualOutbound" in names
    first = dump["dynamic_listeners"][0]
    assert first["active_state"]["listener"]["name"] == first["name"]
    assert first["active_state"]["version_info"]


def test_render_metadata_changes_the_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    case = GOLDEN / "no_sidecar"
    code, out, _ = run(capsys, "--config-dir", str(case / "input"), "--proxy", "productpage-1.default", "--type", "lds",
                       "--metadata", "INTERCEPTION_MODE=NONE")
    assert code == 0
    names = [d["name"] for d in json.loads(out)["configs"][0]["dynamic_listeners"]]
    assert "virtualOutbound" not in names and "127.0.0.1_9080" in names


def test_render_rejects_a_bad_proxy_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--config-dir", str(tmp_path), "--proxy", "nodot")
    assert code == 2 and "POD.NAMESPACE" in err


def test_render_reports_invalid_manifests(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
                                       "metadata: {name: x, namespace: default}\nspec: {egress: [{hosts: [nope]}]}\n")
    code, _, err = run(capsys, "--config-dir", str(tmp_path), "--proxy", "a.default")
    assert code == 2 and "Sidecar/default/x" in err
