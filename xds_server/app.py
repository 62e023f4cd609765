"""Composition root: builds the store, sources, planner, cache and servers, and runs them.

Nothing here is global: tests build an App in-process (ports 0) and talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from xds_server import translate
from xds_server.admin.metrics import Metrics
from xds_server.authz import store_authorizer
from xds_server.config import MeshConfig, Problem
from xds_server.push.debounce import Debouncer
from xds_server.push.dependencies import ProxyDependencies
from xds_server.push.planner import Generate, Planner
from xds_server.settings import Settings
from xds_server.store import Store
from xds_server.translate import proxy_from_node_message
from xds_server.xds import auth, csds
from xds_server.xds.admission import StreamAdmission
from xds_server.xds.services import StreamSettings, XdsServices
from xds_server.xds.subscription import NameSets

log = logging.getLogger("xds_server")


class ConfigError(Exception):
    """Unusable configuration at start (exit code 2)."""


def grpc_options(settings: Settings) -> list[tuple[str, Any]]:
    opts: list[tuple[str, Any]] = [
        # Envoy's node message alone is ~60 kB; delta reconnects echo every resource version.
        ("grpc.max_receive_message_length", settings.max_receive_bytes),
        ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ("grpc.max_concurrent_streams", 100_000),
        # Ping idle connections like istiod (30 s / 10 s). Client pings are accepted every
        # keepalive_min_client_ping (15 s: half of Envoy's 30 s in our bootstrap, as istiod allows
        # keepalive_time/2); a client pinging faster gets GOAWAY too_many_pings after 2 strikes.
        ("grpc.keepalive_time_ms", int(settings.keepalive_interval * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(settings.keepalive_min_client_ping * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        # Off, so a second server on a taken port fails to bind; on for the workers of --workers N.
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        # New streams the event loop has not picked up yet. gRPC's defaults (1,000, dropping at
        # random beyond it, 3,000 at most) cancelled ~1 in 6 streams of 2,000 Envoys connecting at
        # once (bench/): let them queue, and let admission (RESOURCE_EXHAUSTED) pace them instead.
        ("grpc.server.max_pending_requests", 100_000),
        ("grpc.server.max_pending_requests_hard_limit", 100_000),
        # ... and however long it takes: gRPC cancels a new stream the application has not picked up
        # within 30 s by default, and on a starved CPU a 2,000-stream cold start took longer than that
        # (half the streams saw CANCELLED and reconnected after a backoff, bench/RESULTS.md).
        ("grpc.server_max_unrequested_time_in_server", 600),
        # No BDP probing of the clients' send direction (gRPC core's flow control, chttp2 "BDP
        # estimator"): with it, every request received (an xDS ACK, ~100 bytes) makes the server
        # send a PING and read its ACK, to size a receive window that xDS requests never need.
        # At 2,000 streams that was ~2,000 more sendmsg and recvmsg and half of gRPC's own CPU per
        # push (bench/RESULTS.md). Requests then flow in the default 64 KiB window: a large one
        # (a reconnect listing many initial_resource_versions) takes a few more round trips.
        ("grpc.http2.bdp_probe", 0),
    ]
    if settings.max_connection_age > 0:
        # As istiod's MAX_CONNECTION_AGE (grpc-go's MaxConnectionAge): gRPC core itself adds +-10 %
        # jitter to the age, sends GOAWAY, and closes the connection after the grace; the stream
        # of an xDS client never finishes by itself, so the grace is when Envoy reconnects.
        opts.append(("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)))
        opts.append(("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace * 1000)))
    return opts


class App:
    def __init__(self, settings: Settings, sources: list[Any] | None = None,
                 generate: Generate = translate.generate) -> None:
        self.settings = settings
        self._mesh_file_read: tuple[MeshConfig | None, list[Problem], str] | None = None
        self.store = Store(settings.domain_suffix)
        self.metrics = Metrics(self.store)  # this App's own registry: several Apps never collide
        self.store.subscribe(self.metrics.store_changed)
        self.store.subscribe_reports(self.metrics.problems_reported)
        # generate reports what each snapshot read; the planner's dependency index turns that into
        # which proxies a change reaches (a stand-in's result that reports nothing: every push).
        self.planner = Planner(self.store, generate, ProxyDependencies(), observer=self.metrics)
        self.cache = self.planner.cache
        self.debouncer = Debouncer(self.metrics.guard_push(self.planner.push), settings.debounce_quiet,
                                   settings.debounce_max)
        self.store.subscribe(self.debouncer.notify)
        self.sources: list[Any] = sources if sources is not None else self._make_sources()
        self.services = XdsServices(
            self.cache, proxy_from_node_message, ready=self.ready,
            settings=StreamSettings(send_timeout=settings.send_timeout,
                                    max_bytes_in_flight=settings.max_bytes_in_flight),
            observer=self.metrics,
            control_plane_id=f"xds-server@{socket.gethostname()}",
            admission=StreamAdmission(settings.max_new_streams_per_second, settings.new_stream_burst,
                                      settings.max_admission_wait),
            # mTLS: a client certificate may only claim a node of its own namespace and service account.
            authorize=store_authorizer(self.store) if settings.client_ca else None,
            name_sets=NameSets(),  # the streams' subscription name sets, shared between them (memory)
        )
        self.metrics.watch_send_budget(self.services.budget)
        self.grpc_server: grpc.aio.Server | None = None
        self.xds_port = 0
        self.admin: Any = None
        self.admin_port = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.serving = False
        self._stopping = False

    # ------------------------------------------------------------------ wiring
    def _make_sources(self) -> list[Any]:
        sources: list[Any] = []
        s = self.settings
        if s.config_dir:
            from xds_server.sources.files import FileSource

            sources.append(FileSource(s.config_dir))
        if s.kubernetes or s.kubeconfig:
            from xds_server.sources.kubernetes import KubernetesSource

            sources.append(KubernetesSource(kubeconfig=s.kubeconfig, namespaces=list(s.namespaces),
                                            root_namespace=self._root_namespace()))
        return sources

    def _root_namespace(self) -> str:
        """rootNamespace from --mesh-config (the Kubernetes source watches the mesh ConfigMap there).

        An unreadable or invalid file is reported by `_load_mesh_config` at start; here it only
        means the default.
        """
        mesh = self._mesh_file()[0]
        return (mesh or MeshConfig()).root_namespace

    def _mesh_file(self) -> tuple[MeshConfig | None, list[Problem], str]:
        """--mesh-config, read and parsed once: (mesh, problems, read error); all empty without it."""
        if self._mesh_file_read is None:
            self._mesh_file_read = None, [], ""
            path = self.settings.mesh_config
            if path:
                from xds_server.config.parse import parse_mesh_config

                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                except OSError as e:
                    self._mesh_file_read = None, [], e.strerror or str(e)
                else:
                    mesh, problems = parse_mesh_config(text, path)
                    self._mesh_file_read = mesh, problems, ""
        return self._mesh_file_read

    def ready(self) -> bool:
        """Serving, and every source has synced once (never serve a partial config)."""
        return self.serving and all(self.store.synced(src.name) for src in self.sources)

    def _load_mesh_config(self) -> None:
        path = self.settings.mesh_config
        if not path:
            return
        mesh, problems, unreadable = self._mesh_file()
        if unreadable:
            raise ConfigError(f"--mesh-config {path}: {unreadable}")
        errors = [p for p in problems if not p.warning]
        for p in problems:
            (log.warning if p.warning else log.error)("%s", p)
        if mesh is None or errors:
            raise ConfigError(f"--mesh-config {path}: invalid ({len(errors)} problem(s))")
        self.store.upsert("mesh-config-file", mesh)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        self._load_mesh_config()
        server = grpc.aio.server(options=grpc_options(s))
        server.add_generic_rpc_handlers(self.services.handlers())
        csds.register(server, self.services, self.cache,
                      scope=auth.csds_scope(self._root_namespace()) if s.client_ca else None)
        address = s.xds_bind_address
        try:
            if s.tls_cert or s.tls_key:
                credentials = self._server_credentials()
                self.xds_port = server.add_secure_port(address, credentials)
            else:
                self.xds_port = server.add_insecure_port(address)
        except RuntimeError:  # grpc: "Failed to bind to address"
            self.xds_port = 0
        if not self.xds_port:
            raise ConfigError(f"--xds-address {address}: cannot bind")
        await server.start()
        self.grpc_server = server
        self.serving = True
        self._spawn("debounce", self.debouncer.run)
        for src in self.sources:
            self._spawn(f"source-{src.name}", functools.partial(src.run, self.store, self._stop))
        if s.admin_port >= 0:
            from xds_server.admin.server import AdminServer

            self.admin = AdminServer(self)
            self.admin_port = await self.admin.start(s.admin_host, s.admin_port)
        log.info("serving xDS on %s:%d (admin %s:%d)", s.xds_host, self.xds_port, s.admin_host, self.admin_port)

    def _server_credentials(self) -> grpc.ServerCredentials:
        s = self.settings
        if not (s.tls_cert and s.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        try:
            with open(s.tls_key, "rb") as f:
                key = f.read()
            with open(s.tls_cert, "rb") as f:
                cert = f.read()
            ca = None
            if s.client_ca:
                with open(s.client_ca, "rb") as f:
                    ca = f.read()
        except OSError as e:
            raise ConfigError(f"TLS files: {e.filename}: {e.strerror}") from None
        # Check the PEM files here, with clear messages: gRPC only says it cannot bind.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(s.tls_cert, s.tls_key)
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"--tls-cert {s.tls_cert} / --tls-key {s.tls_key}: not a PEM certificate and its "
                              f"private key ({e})") from None
        if s.client_ca:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=s.client_ca)
            except (ssl.SSLError, ValueError) as e:
                raise ConfigError(f"--client-ca {s.client_ca}: not a PEM CA certificate ({e})") from None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def push_in_progress(self) -> bool:
        """A push is coming (changes wait out the debounce), being built, or being sent."""
        return self.debouncer.waiting or self.planner.pushing or self.services.sending()

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        async def guarded() -> None:
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s failed", name)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Stop accepting, tell Envoys to go away (GOAWAY), wait a bounded drain, stop.

        grpc's stop(grace) refuses new connections and streams and sends GOAWAY at once; xDS streams
        never end by themselves, so after `grace` seconds they are cancelled and Envoy reconnects
        (to another replica). Idempotent: a second call returns at once.
        """
        if self._stopping:
            return
        self._stopping = True
        grace = self.settings.drain_seconds if drain_seconds is None else drain_seconds
        self.serving = False  # /readyz answers 503 from now on: load balancers stop sending streams here
        self.services.accepting = False
        self._stop.set()
        if self.grpc_server is not None:
            if self.services.connections:
                log.info("draining %d xDS stream(s) for up to %.1fs", len(self.services.connections), grace)
            await self.grpc_server.stop(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.admin is not None:
            await self.admin.stop()
