"""What the running compose mesh must show: each check returns its failures (an empty list is a pass).

The requests are the ones docs/deploy.md documents (its table of `docker compose exec client curl
...`), run as written through the engine's compose; what each must answer comes from the image
under test itself (`DEMO_CALLS` of xds_server/commands/demo.py, the same calls `xds-server demo`
checks), and the two lists must be the same calls in the same order.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.containers.engine import Engine, log

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "deploy.md"
CALL_TIMEOUT = 30.0  # an Envoy may still be taking its first config, or a change be on its way

# The Dockerfile keeps only the bytecode of the Kubernetes client's generated api/ and models/:
# they must still import and work (serve --kubernetes needs them; the compose mesh does not).
_KUBERNETES_CLIENT = (
    "from kubernetes import client, config, watch; import xds_server.sources.kubernetes; "
    "pod = client.ApiClient().sanitize_for_serialization(client.V1Pod(metadata=client.V1ObjectMeta(name='p'))); "
    "assert pod == {'metadata': {'name': 'p'}}, pod; "
    "assert client.CoreV1Api(client.ApiClient()).list_namespaced_pod; print('ok')"
)

_EXPECTATIONS = (
    "import json; from xds_server.commands.demo import DEMO_CALLS; "
    "print(json.dumps([[c.curl, c.status, list(c.contains), list(c.excludes)] for c in DEMO_CALLS]))"
)


@dataclass(frozen=True)
class Call:
    command: str  # as documented, after `docker compose exec client `
    status: int
    contains: tuple[str, ...]
    excludes: tuple[str, ...] = ()

    def judge(self, exit_code: int, out: str) -> bool:
        if self.status != 200:  # the documented command prints the status code on a line of its own, last
            lines = out.strip().splitlines()  # (-w '\n%{http_code}\n': Envoy's own bodies end no line)
            return bool(lines) and lines[-1].strip() == str(self.status) and all(c in out for c in self.contains)
        return exit_code == 0 and all(c in out for c in self.contains) and not any(e in out for e in self.excludes)


def documented_commands(docs: Path = DOCS) -> list[str]:
    return re.findall(r"^\| \d+ \| `docker compose exec client (curl [^`]+)`", docs.read_text(), re.M)


def calls(engine: Engine, server: str) -> tuple[list[Call], list[str]]:
    """The documented requests with their expected answers, or why they cannot be paired."""
    done = engine.exec_in(server, "python", "-c", _EXPECTATIONS, check=False)
    if done.returncode != 0:
        return [], [f"reading DEMO_CALLS in the image failed: {done.stderr.strip()[-500:]}"]
    expected = {curl: (status, tuple(contains), tuple(excludes))
                for curl, status, contains, excludes in json.loads(done.stdout)}
    documented = documented_commands()
    problems = []
    if documented != list(expected):
        problems.append(f"docs/deploy.md's requests {documented} are not the image's DEMO_CALLS {list(expected)}")
    return [Call(c, *expected[c]) for c in documented if c in expected], problems


def poll(attempt: Callable[[], tuple[bool, str]], timeout: float) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    while True:
        ok, got = attempt()
        if ok or time.monotonic() > deadline:
            return ok, got
        time.sleep(0.5)


def run_call(engine: Engine, call: Call, timeout: float = CALL_TIMEOUT) -> tuple[bool, str]:
    def attempt() -> tuple[bool, str]:
        done = engine.compose_exec("client", call.command)
        return call.judge(done.returncode, done.stdout), (done.stdout + done.stderr).strip()[-400:]
    return poll(attempt, timeout)


def checked_call(engine: Engine, call: Call, label: str, expected: str) -> list[str]:
    """Run `call` (run_call) and log it as PASS/FAIL `label`; when it fails, the problem:
    "`expected`, got <what came back>"."""
    ok, got = run_call(engine, call)
    log(f"  {'PASS' if ok else 'FAIL'} {label}")
    return [] if ok else [f"{expected}, got {got!r}"]


def check_requests(engine: Engine, server: str) -> list[str]:
    pairs, problems = calls(engine, server)
    for n, call in enumerate(pairs, 1):
        problems += checked_call(engine, call, f"{n:2d}. exec client {call.command}",
                                 f"request {n} `{call.command}`: expected HTTP {call.status} {list(call.contains)}")
    if not pairs:
        problems.append("no documented request could be run")
    return problems


def check_states(engine: Engine) -> list[str]:
    """Like `docker compose ps` in docs/deploy.md: bootstrap exited 0, everything else runs."""
    states = engine.states()
    problems = []
    for service, (state, code) in sorted(states.items()):
        if service == "bootstrap":
            if state != "exited" or code != 0:
                problems.append(f"bootstrap: {state}, exit code {code} (expected exited 0)")
        elif state != "running":
            problems.append(f"{service}: {state} (exit code {code})")
    return problems


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, repr(e)


def check_admin_port(admin: str, sidecars: int) -> list[str]:
    """The published admin port answers from the host, and every sidecar's Envoy is in sync."""
    problems = []
    for path in ("/healthz", "/readyz", "/metrics"):
        status, body = http_get(f"http://{admin}{path}")
        if status != 200:
            problems.append(f"http://{admin}{path} from the host: HTTP {status} {body[:200]!r}")

    def synced() -> tuple[bool, str]:
        status, body = http_get(f"http://{admin}/debug/syncz")
        if status != 200:
            return False, f"HTTP {status}"
        proxies = json.loads(body)["proxies"]
        states = {p["proxy"]: sorted({t["state"] for t in p["types"].values() if t["subscribed"]}) for p in proxies}
        ok = len(states) == sidecars and all(s == ["SYNCED"] for s in states.values())
        return ok, json.dumps(states)

    ok, got = poll(synced, CALL_TIMEOUT)
    if not ok:
        problems.append(f"/debug/syncz: expected {sidecars} proxies, all SYNCED; got {got}")
    return problems


def check_health(engine: Engine, server: str) -> list[str]:
    ok, got = engine.health(server)
    return [] if ok else [f"the image's HEALTHCHECK failed: {got}"]


def check_non_root(engine: Engine, server: str, image_user: str) -> list[str]:
    """The server's process (seen from the host) and an exec in its container run as the image's USER."""
    uid = image_user.split(":")[0]
    problems = []
    pid = engine.engine("inspect", "--format", "{{.State.Pid}}", server, quiet=True).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    if uids is None or set(uids.group(1).split()) != {uid}:
        problems.append(f"the server process {pid} runs as {uids.group(1) if uids else '?'} (real, effective, saved, "
                        f"fs uids), not {uid}")
    if uid == "0":
        problems.append("the image's USER is root")
    done = engine.exec_in(server, "id", "-u", check=False)
    if done.stdout.strip() != uid:
        problems.append(f"`id -u` in the server container: {done.stdout.strip() or done.stderr.strip()}")
    return problems


def check_image(engine: Engine, image: str) -> tuple[list[str], dict[str, Any]]:
    """`xds-server --version` in the image is the package's version; the OCI labels say the same."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    problems = []
    done = engine.run_image(image, "--version")
    if done.stdout.strip() != f"xds-server {version}":
        problems.append(f"`xds-server --version` in {image}: {done.stdout.strip() or done.stderr.strip()!r}, "
                        f"expected 'xds-server {version}'")
    client = engine.run_image(image, "-c", _KUBERNETES_CLIENT, entrypoint="python")
    if client.stdout.strip() != "ok":
        problems.append(f"the Kubernetes client in {image} does not work: {client.stderr.strip()[-800:]}")
    labels = json.loads(engine.image_labels(image) or "null") or {}
    for key in ("title", "description", "version", "licenses", "base.name"):
        if not labels.get(f"org.opencontainers.image.{key}"):
            problems.append(f"{image} has no org.opencontainers.image.{key} label")
    if labels.get("org.opencontainers.image.version", version) != version:
        problems.append(f"org.opencontainers.image.version {labels['org.opencontainers.image.version']!r} is not "
                        f"the package's {version}")
    return problems, {"version": done.stdout.strip(), "size_mb": round(engine.image_size(image) / 1e6, 1)}


def check_config_change(engine: Engine, manifests: Path) -> list[str]:
    """An edit of the mounted manifests reaches the Envoys: payments imports shop, and back.

    The payments Sidecar imports only its own namespace, so `Host: catalog.shop` on its egress
    listener is a 502 (documented request 10). Adding "shop/*" to its hosts must make the same
    request reach catalog, and removing it must make it a 502 again.
    """
    path = manifests / "20-payments.yaml"
    original = path.read_text()
    before = '    hosts: ["./*"]\n'
    if original.count(before) != 1:
        return [f"{path.name}: expected exactly one line {before.strip()!r} to edit"]
    request = Call("curl -s -w '\\n%{http_code}\\n' -H 'Host: catalog.shop' http://127.0.2.3:9080/", 200,
                   ("hello from catalog-1.shop",))
    problems = []
    try:
        path.write_text(original.replace(before, '    hosts: ["./*", "shop/*"]\n'))
        problems += checked_call(engine, request,
                                 "payments Sidecar imports shop/*: catalog.shop answers through its Envoy",
                                 "after adding shop/* to the payments Sidecar: expected catalog's answer")
    finally:
        path.write_text(original)
    problems += checked_call(engine, Call(request.command, 502, ()), "edit undone: catalog.shop is a 502 again",
                             "after undoing the edit: expected 502")
    return problems


CANARY_FILE = "40-reviews.yaml"
CANARY = "curl -s -H 'Host: reviews' 'http://127.0.2.1:9080/reviews?[1-20]'"  # documented request 11
V1, V2 = "hello from reviews-v1-1.shop", "hello from reviews-v2-1.shop"


def canary_weights(text: str, v1: int, v2: int) -> str:
    """The manifest with the two weights docs/deploy.md says to edit set to v1 and v2."""
    for subset, weight in (("v1", v1), ("v2", v2)):
        text, n = re.subn(rf"(weight: )\d+(\s*# canary: {subset}\b)", rf"\g<1>{weight}\g<2>", text)
        if n != 1:
            raise ValueError(f"{CANARY_FILE}: expected one line `weight: N  # canary: {subset}`, found {n}")
    return text


def check_canary_shift(engine: Engine, manifests: Path) -> list[str]:
    """The canary shifted in the mounted manifests: 50/50 shows both versions, 0/100 only v2, and
    putting the file back only v1 again."""
    path = manifests / CANARY_FILE
    original = path.read_text()
    steps = ((50, 50, Call(CANARY, 200, (V1, V2))), (0, 100, Call(CANARY, 200, (V2,), ("reviews-v1-1",))))
    problems = []
    try:
        for v1, v2, request in steps:
            try:
                path.write_text(canary_weights(original, v1, v2))
            except ValueError as e:
                return [str(e)]
            problems += checked_call(engine, request,
                                     f"canary weights {v1}/{v2}: request 11 answers from {request.contains}",
                                     f"canary weights {v1}/{v2}: expected {request.contains} only")
    finally:
        path.write_text(original)
    problems += checked_call(engine, Call(CANARY, 200, (V1,), ("reviews-v2-1",)),
                             "canary file put back: only v1 answers", "after putting the canary back: expected v1 only")
    return problems
