"""The container engine the run drives: rootful Podman with podman-compose, or Docker with `docker compose`.

Every engine call goes through `Engine.run`, bounded by a timeout and logged, so a hung engine
fails the run instead of hanging it. Podman specifics (e2e/containers/run.sh installs it):
containers and builds go under a cgroup of this run (`--cgroup-parent`), because without it
cgroupfs puts them in /libpod_parent, outside the cgroup of whoever started the run and so outside
what a CI job cleans up; and its network backend (netavark) turns on net.ipv4.ip_forward and adds
NETAVARK_* chains to the host's iptables, which `HostState` puts back afterwards.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STATE = Path(os.environ.get("XDS_CONTAINERS_STATE", "/var/cache/xds-server-containers"))
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class RunError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float, check: bool = True, quiet: bool = False,
        cwd: Path | None = None, stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
    if not quiet:
        log("$ " + shlex.join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              stdin=stdin if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise RunError(f"{shlex.join(argv)}: no answer within {timeout:.0f}s") from e
    if check and done.returncode != 0:
        raise RunError(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def memory_cgroup() -> str:
    """This process's memory cgroup (cgroup v1), else its unified (v2) one: where its children belong."""
    unified = "/"
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified


@dataclass
class Engine:
    """What the run needs from an engine; `Podman` and `Docker` differ only where the tools do."""

    name: str
    compose_project: str
    project_dir: Path  # where docker-compose.yml is, so its relative paths resolve there
    cgroup_parent: str | None = None
    base_argv: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- plain engine calls
    def engine(self, *args: str, timeout: float = 120, check: bool = True,
               quiet: bool = False) -> subprocess.CompletedProcess[str]:
        return run([*self.base_argv, *args], timeout=timeout, check=check, quiet=quiet)

    def image_exists(self, ref: str) -> bool:
        return self.engine("image", "inspect", "--format", "{{.Id}}", ref, check=False, quiet=True).returncode == 0

    def pull(self, ref: str) -> bool:
        done = self.engine("pull", ref, timeout=600, check=False)
        if done.returncode != 0:
            log(f"  cannot pull {ref}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return done.returncode == 0

    def build(self, context: Path, tag: str, containerfile: Path | None = None,
              build_args: dict[str, str] | None = None, host_ca: bool = True, timeout: float = 900) -> None:
        argv = ["build", "--tag", tag, "--network", "host"]
        if containerfile is not None:
            argv += ["--file", str(containerfile)]
        for key, value in (build_args or {}).items():
            argv += ["--build-arg", f"{key}={value}"]
        argv += self.build_flags(host_ca)
        self.engine(*argv, str(context), timeout=timeout)

    def build_flags(self, host_ca: bool) -> list[str]:
        return []

    def image_size(self, ref: str) -> int:
        return int(self.engine("image", "inspect", "--format", "{{.Size}}", ref, quiet=True).stdout.strip())

    def image_labels(self, ref: str) -> str:
        return self.engine("image", "inspect", "--format", "{{json .Config.Labels}}", ref, quiet=True).stdout

    def container_id(self, service: str) -> str:
        done = self.engine("ps", "-a", "-q", "--filter", f"label={self.project_label}={self.compose_project}",
                           "--filter", f"label={self.service_label}={service}", quiet=True)
        ids = done.stdout.split()
        if len(ids) != 1:
            raise RunError(f"expected one container of service {service}, found {len(ids)}")
        return ids[0]

    def exec_in(self, container: str, *argv: str, user: str | None = None, timeout: float = 30,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        user_args = ["--user", user] if user else []
        return self.engine("exec", *user_args, container, *argv, timeout=timeout, check=check, quiet=True)

    def run_flags(self) -> list[str]:
        return []

    def run_image(self, image: str, *args: str, entrypoint: str | None = None,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A one-off container of IMAGE with ARGS as its command, no network."""
        override = ["--entrypoint", entrypoint] if entrypoint else []
        return self.engine("run", "--rm", "--network", "none", *self.run_flags(), *override, image, *args,
                           timeout=timeout, check=False)

    # ---------------------------------------------------------------- compose
    project_label = "com.docker.compose.project"
    service_label = "com.docker.compose.service"

    def compose_argv(self) -> list[str]:
        raise NotImplementedError

    def compose(self, *args: str, timeout: float = 300, check: bool = True,
                quiet: bool = False) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_argv(), *args], timeout=timeout, check=check, quiet=quiet, cwd=self.project_dir)

    def compose_up(self) -> None:
        raise NotImplementedError

    def compose_exec(self, service: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`<compose> exec SERVICE COMMAND` without a terminal, COMMAND split as a shell would."""
        return self.compose("exec", "-T", service, *shlex.split(command), timeout=timeout, check=False, quiet=True)

    def health(self, container: str) -> tuple[bool, str]:
        raise NotImplementedError

    def states(self) -> dict[str, tuple[str, int]]:
        """service -> (state, exit code) of the project's containers."""
        ids = self.engine("ps", "-a", "-q", "--filter", f"label={self.project_label}={self.compose_project}",
                          quiet=True).stdout.split()
        if not ids:
            return {}
        fmt = '{{index .Config.Labels "' + self.service_label + '"}} {{.State.Status}} {{.State.ExitCode}}'
        out = {}
        for line in self.engine("inspect", "--format", fmt, *ids, quiet=True).stdout.splitlines():
            service, state, code = line.split()
            out[service] = (state, int(code))
        return out

    def logs(self, lines: int = 40) -> str:
        done = self.compose("logs", "--tail", str(lines), timeout=60, check=False, quiet=True)
        return done.stdout + done.stderr

    # ---------------------------------------------------------------- teardown
    def teardown(self) -> list[str]:
        """Remove the project's containers, networks and volumes; returns what could not be removed."""
        problems: list[str] = []
        try:
            self.compose("down", "-v", "-t", "2", timeout=180, check=False)
        except RunError as e:
            problems.append(str(e))
        label = f"label={self.project_label}={self.compose_project}"
        for kind, list_args, rm_args in (("container", ["ps", "-a", "-q"], ["rm", "-f"]),
                                         ("network", ["network", "ls", "-q"], ["network", "rm", "-f"]),
                                         ("volume", ["volume", "ls", "-q"], ["volume", "rm", "-f"])):
            try:
                left = self.engine(*list_args, "--filter", label, quiet=True, check=False).stdout.split()
                if left:
                    log(f"  removing leftover {kind}s: {' '.join(left)}")
                    done = self.engine(*rm_args, *left, timeout=120, check=False)
                    if done.returncode != 0:
                        problems.append(f"{kind}s {left}: {done.stderr.strip()}")
            except RunError as e:
                problems.append(str(e))
        return problems


class Podman(Engine):
    project_label = "io.podman.compose.project"
    service_label = "io.podman.compose.service"

    def __init__(self, compose_project: str, project_dir: Path) -> None:
        # one cgroup per run under this process's own, so everything the run starts is counted and
        # removed with it (run.sh holds a lock: one run at a time). A build's container goes IN its
        # cgroup parent, not below it, and runc cannot set up a devices cgroup that already has
        # children ("devices.deny: invalid argument"), so every build gets a fresh leaf and the
        # containers share another.
        parent = memory_cgroup().rstrip("/") + "/xds-server-containers"
        super().__init__("podman", compose_project, project_dir, cgroup_parent=parent, base_argv=["podman"])
        self.builds = 0

    def build_flags(self, host_ca: bool) -> list[str]:
        # --format docker keeps HEALTHCHECK (the OCI format has no such field); --pull=never: the
        # images the Dockerfile names are present by now (pulled or stand-ins). pip inside a build
        # must trust what the host trusts (an intercepting proxy's CA, say); a build that installs
        # the ca-certificates package cannot have that file mounted ("Device or resource busy").
        self.builds += 1
        flags = ["--pull=never", "--format", "docker", f"--cgroup-parent={self.cgroup_parent}/build-{self.builds}"]
        if host_ca and HOST_CA_BUNDLE.is_file():
            flags += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        return flags

    def run_flags(self) -> list[str]:
        return [f"--cgroup-parent={self.cgroup_parent}/containers"]

    def compose_argv(self) -> list[str]:
        return [str(STATE / "venv" / "bin" / "podman-compose"), "--in-pod=false", "-p", self.compose_project,
                f"--podman-run-args=--cgroup-parent={self.cgroup_parent}/containers"]

    def compose_up(self) -> None:
        # the image is built beforehand (podman-compose's own builds get neither host networking
        # nor the CA mount), so --no-build
        self.compose("up", "-d", "--no-build", timeout=300)

    def health(self, container: str) -> tuple[bool, str]:
        # no systemd here, so podman runs no health check on a timer: run one now
        done = self.engine("healthcheck", "run", container, timeout=30, check=False, quiet=True)
        return done.returncode == 0, (done.stdout + done.stderr).strip() or f"exit {done.returncode}"

    def teardown(self) -> list[str]:
        problems = super().teardown()
        problems += remove_cgroup(self.cgroup_parent or "")
        return problems


class Docker(Engine):
    def __init__(self, compose_project: str, project_dir: Path) -> None:
        super().__init__("docker", compose_project, project_dir, base_argv=["docker"])

    def compose_argv(self) -> list[str]:
        return ["docker", "compose", "-p", self.compose_project]

    def compose_up(self) -> None:
        self.compose("up", "-d", "--no-build", timeout=300)

    def health(self, container: str) -> tuple[bool, str]:
        # the Docker daemon runs the check every 10 s: wait for its verdict
        deadline = time.monotonic() + 60
        status = "?"
        while time.monotonic() < deadline:
            status = self.engine("inspect", "--format", "{{.State.Health.Status}}", container,
                                 quiet=True).stdout.strip()
            if status in ("healthy", "unhealthy"):
                break
            time.sleep(1)
        return status == "healthy", status


def remove_cgroup(relative: str) -> list[str]:
    """rmdir RELATIVE and everything below it in every cgroup hierarchy (they are empty by now)."""
    problems: list[str] = []
    if not relative.strip("/"):
        return problems
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / relative.lstrip("/")
        if not top.is_dir():
            continue
        for path in [*sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), top]:
            for _ in range(50):  # a cgroup can stay busy for a moment after its last process exits
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                problems.append(f"cgroup {path} is not empty")
    return problems


# -------------------------------------------------------------------- host state
_CHAIN = re.compile(r"^:(\S+) ")


@dataclass
class HostState:
    """What the compose network changes on the host: ip_forward and the netavark iptables chains."""

    ip_forward: str
    chains: dict[str, set[str]]  # table -> NETAVARK chains present before the run

    @classmethod
    def snapshot(cls) -> HostState:
        return cls(Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(), netavark_chains())

    def restore(self) -> list[str]:
        problems: list[str] = []
        now = netavark_chains()
        for table, chains in now.items():
            ours = chains - self.chains.get(table, set())
            if ours:
                problems += drop_chains(table, ours)
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        if forward.read_text().strip() != self.ip_forward:
            log(f"  restoring net.ipv4.ip_forward={self.ip_forward}")
            forward.write_text(self.ip_forward + "\n")
        return problems


def netavark_chains() -> dict[str, set[str]]:
    try:
        dump = run(["iptables-save"], timeout=30, quiet=True).stdout
    except (RunError, FileNotFoundError):
        return {}
    out: dict[str, set[str]] = {}
    table = ""
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif (m := _CHAIN.match(line)) and m.group(1).startswith("NETAVARK"):
            out.setdefault(table, set()).add(m.group(1))
    return out


def drop_chains(table: str, chains: set[str]) -> list[str]:
    """Delete CHAINS of TABLE that this run's network created, and every rule that jumps to them."""
    log(f"  removing iptables {table} chains {' '.join(sorted(chains))}")
    dump = run(["iptables-save", "-t", table], timeout=30, quiet=True).stdout
    for line in dump.splitlines():
        if line.startswith("-A "):
            words = shlex.split(line)
            if "-j" in words and words[words.index("-j") + 1] in chains and words[1] not in chains:
                run(["iptables", "-t", table, "-D", *words[1:]], timeout=30, check=False, quiet=True)
    for chain in chains:
        run(["iptables", "-t", table, "-F", chain], timeout=30, check=False, quiet=True)
    problems = []
    for chain in chains:
        if run(["iptables", "-t", table, "-X", chain], timeout=30, check=False, quiet=True).returncode != 0:
            problems.append(f"iptables {table} chain {chain} could not be removed")
    return problems
