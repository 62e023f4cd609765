"""Run docker-compose.yml's services without Docker, in the one network namespace they share.

    unshare --net python -m tests.unit.deploy.compose_offline WORKDIR

Each service's command line is taken from the compose file (the xds-server image's ENTRYPOINT
`xds-server` when the service sets none; Envoy's image runs `envoy` from the command), with
container paths mapped to what the volumes mount: the repository's files for bind mounts, a
directory under WORKDIR for named volumes. Then every call of `xds-server demo` (DEMO_CALLS) is
made from that namespace, as `docker compose exec client curl ...` would. Prints one JSON line:
{"results": [[ok, curl, got], ...]}. Only the `client` container (curl) is not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
XDS_IMAGE_ENTRYPOINT = ["xds-server"]  # the Dockerfile's ENTRYPOINT


def load() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def mounts(service: dict[str, Any], workdir: Path) -> dict[str, Path]:
    out = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        out[target] = (ROOT / source).resolve() if source.startswith(".") else workdir / "volumes" / source
    return out


def argv(service: dict[str, Any], workdir: Path) -> list[str]:
    """The service's process as Docker would start it, with host paths for container paths."""
    from xds_server.commands.demo import envoy_binary

    if service["image"].startswith("xds-server:"):
        args = list(service.get("entrypoint") or XDS_IMAGE_ENTRYPOINT) + list(service.get("command") or [])
    else:
        args = list(service["command"])
    programs = {"xds-server": [sys.executable, "-m", "xds_server"], "python": [sys.executable],
                "envoy": [envoy_binary() or "envoy"], "/bin/sh": ["sh"]}
    out = programs.get(args[0], [args[0]])
    paths = sorted(mounts(service, workdir).items(), key=lambda kv: -len(kv[0]))
    for arg in args[1:]:
        for target, host in paths:
            if arg == target or arg.startswith(target + "/"):
                arg = str(host) + arg[len(target):]
                break
        out.append(arg)
    return out


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 3) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main(workdir: Path) -> None:
    from xds_server.commands.demo import DEMO_CALLS

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    services = load()["services"]
    shims = workdir / "bin"  # `xds-server` as the image has it on PATH
    shims.mkdir(parents=True, exist_ok=True)
    (shims / "xds-server").write_text(f"#!/bin/sh\nexec {sys.executable} -m xds_server \"$@\"\n")
    (shims / "xds-server").chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{shims}:{os.environ.get('PATH', '')}"}
    procs: list[subprocess.Popen[bytes]] = []
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def start(name: str) -> subprocess.Popen[bytes]:
        for host in mounts(services[name], workdir).values():
            if "volumes" in str(host):
                host.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(argv(services[name], workdir), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd="/", start_new_session=True)
        procs.append(proc)
        return proc

    try:
        start("xds-server")
        wait("the server", lambda: _get("http://127.0.0.1:15014/readyz")[0] == 200, 30)
        assert start("bootstrap").wait(60) == 0, (logs / "bootstrap.log").read_text()
        deps = {n: s.get("depends_on") or {} for n, s in services.items()}
        for name in services:
            if name in ("xds-server", "bootstrap", "client"):
                continue
            assert all(d in ("bootstrap", "xds-server") for d in deps[name]), name
            start(name)
        for boot in sorted((workdir / "volumes" / "bootstrap").glob("*.yaml")):
            admin = yaml.safe_load(boot.read_text())["admin"]["address"]["socket_address"]
            url = f"http://{admin['address']}:{admin['port_value']}/ready"
            wait(f"the Envoy of {boot.stem}", lambda url=url: _get(url)[0] == 200, 30)
        results = []
        for call in DEMO_CALLS:
            deadline = time.monotonic() + 10
            while True:
                try:
                    answers, slowest = [], 0.0
                    for url in call.requests:
                        started = time.monotonic()
                        answers.append(_get(url, call.headers, call.timeout))
                        slowest = max(slowest, time.monotonic() - started)
                    ok = call.judge(answers, slowest)
                    got = " | ".join(f"HTTP {status}: {body.strip()}" for status, body in answers)
                except OSError as e:
                    ok, got = False, repr(e)
                if ok or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            results.append([ok, call.curl, got])
        print(json.dumps({"results": results}))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
