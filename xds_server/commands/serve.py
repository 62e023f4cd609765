"""`xds-server serve`: run the control plane until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from xds_server.app import App, ConfigError
from xds_server.commands.signals import stop_on_signals
from xds_server.logs import setup_logging
from xds_server.push.collector import Collector
from xds_server.settings import Settings

log = logging.getLogger("xds_server")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        config_dir=args.config_dir,
        kubernetes=args.kubernetes or bool(args.kubeconfig),
        kubeconfig=args.kubeconfig,
        namespaces=tuple(args.namespace),
        mesh_config=args.mesh_config,
        xds_host=args.xds_address[0], xds_port=args.xds_address[1],
        admin_host=args.admin_address[0], admin_port=args.admin_address[1],
        domain_suffix=args.domain_suffix,
        tls_cert=args.tls_cert, tls_key=args.tls_key, client_ca=args.client_ca,
        debounce_quiet=args.debounce_quiet, debounce_max=args.debounce_max,
        drain_seconds=args.drain_seconds, max_connection_age=args.max_connection_age,
        max_connection_age_grace=args.max_connection_age_grace,
        max_new_streams_per_second=args.max_new_streams_per_second, new_stream_burst=args.new_stream_burst,
        max_admission_wait=args.max_admission_wait,
        max_receive_bytes=args.max_receive_bytes, send_timeout=args.send_timeout,
        max_bytes_in_flight=args.max_bytes_in_flight, reuse_port=args.reuse_port,
        keepalive_interval=args.keepalive_interval, keepalive_timeout=args.keepalive_timeout,
        keepalive_min_client_ping=args.min_client_ping_interval,
    )


def check(settings: Settings) -> str | None:
    """A message for flags that cannot work, or None."""
    if not settings.config_dir and not settings.kubernetes:
        return ("no config source: give --config-dir DIR and/or --kubernetes "
                "(to try it out without one, run `xds-server demo`)")
    if settings.config_dir and not os.path.isdir(settings.config_dir):
        return f"--config-dir {settings.config_dir}: not a readable directory"
    if settings.kubeconfig and not os.path.isfile(settings.kubeconfig):
        return f"--kubeconfig {settings.kubeconfig}: no such file"
    if bool(settings.tls_cert) != bool(settings.tls_key):
        return "--tls-cert and --tls-key go together"
    if settings.client_ca and not settings.tls_cert:
        return "--client-ca needs --tls-cert and --tls-key"
    if settings.max_new_streams_per_second < 0 or settings.new_stream_burst < 1 or settings.max_admission_wait < 0:
        return "--max-new-streams-per-second and --max-admission-wait must be >= 0 and --new-stream-burst >= 1"
    if settings.max_bytes_in_flight < 0:
        return "--max-bytes-in-flight must be >= 0 (0: no bound)"
    if settings.max_receive_bytes < 64 * 1024:
        return "--max-receive-bytes: at least 65536 (Envoy's node message alone is ~60 kB)"
    if settings.max_connection_age < 0 or settings.max_connection_age_grace < 0:
        return "--max-connection-age and --max-connection-age-grace must be >= 0"
    if min(settings.send_timeout, settings.keepalive_interval, settings.keepalive_timeout,
           settings.keepalive_min_client_ping) <= 0:
        return "--send-timeout and the keepalive flags must be > 0"
    return None


def check_kubernetes(settings: Settings) -> str | None:
    """A message when the Kubernetes client cannot be configured (a bad kubeconfig, or in-cluster
    without a pod's environment): an exit 2 now rather than a server that never becomes ready."""
    if not settings.kubernetes:
        return None
    from xds_server.sources.kubernetes import KubeConfigError, load_client_configuration

    try:
        load_client_configuration(settings.kubeconfig)
    except KubeConfigError as e:
        return str(e)
    return None


async def serve(settings: Settings) -> int:
    app = App(settings)
    try:
        await app.start()
    except ConfigError as e:
        log.error("%s", e)
        await app.stop(0)
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stop_on_signals(loop, stop)
    # This process is the server's own: keep the cyclic garbage collector off the push path.
    collector = Collector(sending=app.push_in_progress)
    app.planner.after_push = collector.busy
    collecting = asyncio.create_task(collector.run(), name="gc")
    await stop.wait()
    collecting.cancel()
    log.info("shutting down: draining for up to %.1fs", settings.drain_seconds)
    await app.stop()
    log.info("stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    settings = settings_from_args(args)
    from xds_server.commands import workers

    problem = check(settings) or check_kubernetes(settings) or workers.check(settings, args.workers)
    if problem:
        print(f"xds-server serve: {problem}", file=sys.stderr)
        return 2
    if args.workers > 1:
        argv = getattr(args, "argv", sys.argv[1:])
        return workers.supervise(argv[argv.index("serve") + 1:], settings, args.workers)
    try:
        import uvloop

        return uvloop.run(serve(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(serve(settings))
