"""Build the Dockerfile and run docker-compose.yml for real, check what docs/deploy.md promises, tear down.

Started by e2e/containers/run.sh (which installs the engine): `python -m e2e.containers.run`.
Steps: the images the files name (present, pulled, or stand-ins: e2e/containers/standins.py); the
Dockerfile built as it is; the compose file brought up as it is, from a copy of the files it
mounts, so the config-change check edits the copy and never this checkout; the checks of
e2e/containers/checks.py; then, whatever happened, the project's containers, networks, volumes,
cgroups and host changes removed (images stay, as a cache). The last line printed is a JSON
summary: {"ok": ..., "problems": [...], "timings_s": {...}, "image": {...}, "images": {...}}.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from e2e.containers import checks, standins
from e2e.containers.engine import STATE, Docker, Engine, HostState, Podman, RunError, log

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXIT_FAILED, EXIT_USAGE, EXIT_PORT_TAKEN = 1, 2, 3
LOCK_WAIT = 900.0  # another run of this script on the machine (they share the published port)


def port_problem(address: str) -> str | None:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            return "in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
    return None


@contextmanager
def machine_lock() -> Iterator[None]:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "run.lock", "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunError(f"another e2e/containers/run.sh still holds {STATE / 'run.lock'}") from None
                time.sleep(1)
        yield


def copy_project(workdir: Path, compose: dict[str, Any]) -> Path:
    """docker-compose.yml and every ./path it mounts, copied to WORKDIR (same relative layout)."""
    project = workdir / "project"
    project.mkdir()
    shutil.copy2(COMPOSE_FILE, project / COMPOSE_FILE.name)
    for service in compose["services"].values():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                target = project / source
                if not target.exists():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def interrupted(signum: int, _frame: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # a second signal must not cut the teardown short
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)  # unwinds through the teardown in run_all()


class Phases:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        log(f"== {name}")
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - start, 1)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, interrupted)
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    project_name = compose.get("name") or ROOT.name
    built = [(name, s) for name, s in compose["services"].items() if "build" in s]
    if len(built) != 1:
        log(f"expected one service that builds the Dockerfile, found {[n for n, _ in built]}")
        return EXIT_USAGE
    server_service, server = built[0]
    image = server["image"]
    admin = next((p.rsplit(":", 1)[0] for p in server.get("ports") or [] if p.rsplit(":", 1)[1] == "15014"), None)
    if admin is None:
        log(f"services.{server_service}.ports does not publish the admin port 15014")
        return EXIT_USAGE
    sidecars = sum(1 for s in compose["services"].values() if "/envoy:" in s.get("image", ""))

    phases = Phases()
    problems: list[str] = []
    summary: dict[str, Any] = {}
    started = time.monotonic()
    exit_code = EXIT_FAILED
    try:
        with machine_lock():
            if (why := port_problem(admin)) is not None:
                log(f"run.sh: {admin} ({server_service}'s published admin port) is {why}: free it first "
                    f"(`ss -ltnp 'sport = :{admin.rsplit(':', 1)[1]}'` shows who has it)")
                return EXIT_PORT_TAKEN
            engine: Engine = (Docker if os.environ.get("CONTAINER_ENGINE") == "docker" else Podman)(
                project_name, ROOT)
            problems = run_all(engine, phases, compose, image, server_service, admin, sidecars, summary)
    except RunError as e:
        problems.append(str(e))
    except SystemExit as e:  # a signal, after the teardown in run_all()
        problems.append(f"interrupted (exit code {e.code}); everything it had started was removed")
        exit_code = int(e.code or EXIT_FAILED)
    summary = {"ok": not problems, "problems": problems, "timings_s": {**phases.timings,
               "total": round(time.monotonic() - started, 1)}, **summary}
    log("\n".join(["== FAILED:", *problems]) if problems else "== all checks passed")
    print(json.dumps(summary), flush=True)
    return exit_code if problems else 0


def run_all(engine: Engine, phases: Phases, compose: dict[str, Any], image: str, server_service: str,
            admin: str, sidecars: int, summary: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if engine.states():  # left by a run that was killed (this project name is the compose file's)
        log("== removing what an interrupted run left")
        engine.teardown()
    host = HostState.snapshot() if isinstance(engine, Podman) else None
    workdir = Path(tempfile.mkdtemp(prefix="xds-server-containers-", dir="/var/tmp"))
    try:
        with phases.phase("images named by the Dockerfile and docker-compose.yml"):
            pulled, _ = standins.compose_images(COMPOSE_FILE)
            names = standins.dockerfile_base_images(ROOT / "Dockerfile") + pulled
            summary["images"] = {ref: standins.ensure(engine, ref) for ref in names}
        with phases.phase(f"build {image} from the Dockerfile"):
            engine.build(ROOT, image)
        with phases.phase("image checks"):
            image_problems, summary["image"] = checks.check_image(engine, image)
            problems += image_problems
        project = copy_project(workdir, compose)
        engine.project_dir = project
        with phases.phase("compose up"):
            engine.compose_up()
            server = engine.container_id(server_service)
        with phases.phase("documented requests"):
            problems += checks.check_requests(engine, server)
        with phases.phase("service states, admin port, health check, user"):
            problems += checks.check_states(engine)
            problems += checks.check_admin_port(admin, sidecars)
            problems += checks.check_health(engine, server)
            user = engine.engine("image", "inspect", "--format", "{{.Config.User}}", image, quiet=True).stdout.strip()
            problems += checks.check_non_root(engine, server, user or "0")
        with phases.phase("config changes in the mounted manifests"):
            problems += checks.check_config_change(engine, project / "xds_server" / "commands" / "demo_mesh")
            problems += checks.check_canary_shift(engine, project / "xds_server" / "commands" / "demo_mesh")
    except RunError as e:
        problems.append(str(e))
    except Exception as e:  # a bug here must still end in a teardown and a summary
        log(traceback.format_exc())
        problems.append(f"unexpected {type(e).__name__}: {e}")
    finally:
        problems += teardown(engine, host, workdir, phases, show_logs=bool(problems))
    return problems


def teardown(engine: Engine, host: HostState | None, workdir: Path, phases: Phases, show_logs: bool) -> list[str]:
    """Every step runs even when one before it fails; what could not be undone is returned."""
    leftovers: list[str] = []
    with phases.phase("teardown"):
        if show_logs and engine.project_dir != ROOT:
            try:
                log("== logs of the compose services\n" + engine.logs())
            except RunError as e:
                log(f"  no logs: {e}")
        undo: list[tuple[str, Callable[[], list[str]]]] = [("containers", engine.teardown)]
        if host is not None:
            undo.append(("host", host.restore))
        for name, step in undo:
            try:
                leftovers += step()
            except Exception as e:  # keep tearing down; report it
                leftovers.append(f"{name}: {type(e).__name__}: {e}")
        shutil.rmtree(workdir, ignore_errors=True)
    return [f"teardown: {p}" for p in leftovers]


if __name__ == "__main__":
    sys.exit(main())
