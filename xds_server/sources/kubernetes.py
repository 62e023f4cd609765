"""The Kubernetes source: Pods, Services, Namespaces, Istio Sidecars and ServiceEntries, and the
mesh ConfigMap, kept current by list-then-watch reflectors.

The official client is synchronous, so each reflector runs in its own thread and hands its
batches of operations to the event loop with `loop.call_soon_threadsafe`; the sink is only ever
touched on the loop thread, in the order the API server sent things. The source is ready
(`sink.mark_synced("kubernetes")`) once every reflector has completed its first list; a kind
whose CRD is not installed counts as listed and empty, and is retried in the background.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence

import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.config.incluster_config import SERVICE_HOST_ENV_NAME, SERVICE_PORT_ENV_NAME, InClusterConfigLoader

from xds_server.sources.kube_kinds import watch_targets
from xds_server.sources.kube_reflector import (
    Delete,
    Op,
    Reflector,
    ReflectorSettings,
    Replace,
    Report,
    Synced,
    Upsert,
)
from xds_server.sources.sink import ConfigSink

log = logging.getLogger(__name__)

USER_AGENT = "xds-server"
# Where the kubelet mounts a pod's service-account token, CA and namespace; the variable points
# elsewhere (tests, or a token mounted at another path).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_DIR_ENV = "XDS_SERVER_SERVICE_ACCOUNT_DIR"


class KubeConfigError(Exception):
    """No usable client configuration (bad kubeconfig, or not running in a cluster)."""


def load_client_configuration(kubeconfig: str | os.PathLike[str] | None, context: str | None = None) -> Configuration:
    """The client configuration from a kubeconfig file, or in-cluster when kubeconfig is None.

    Blocking (reads files); call it before the loop runs or in a thread. Raises KubeConfigError.
    """
    configuration = Configuration()
    try:
        if kubeconfig is not None:
            kube_config.load_kube_config(
                config_file=os.fspath(kubeconfig),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            load_in_cluster(configuration)
    except (kube_config.ConfigException, OSError, ValueError, yaml.YAMLError, TypeError, AttributeError,
            KeyError) as e:  # the loader lets malformed YAML and wrong shapes through as they come
        where = f"kubeconfig {os.fspath(kubeconfig)}" if kubeconfig is not None else "in-cluster config"
        raise KubeConfigError(f"cannot load {where}: {e}") from e
    return configuration


def load_in_cluster(configuration: Configuration) -> None:
    """What a pod gets: the API server's address from KUBERNETES_SERVICE_HOST/PORT, the
    service-account token and CA from SERVICE_ACCOUNT_DIR (or $XDS_SERVER_SERVICE_ACCOUNT_DIR).
    The official loader also installs a hook that re-reads the token file as the kubelet rotates
    it (bound tokens expire; client-go re-reads it the same way)."""
    directory = os.environ.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR
    if not os.environ.get(SERVICE_HOST_ENV_NAME) or not os.environ.get(SERVICE_PORT_ENV_NAME):
        raise kube_config.ConfigException(
            f"{SERVICE_HOST_ENV_NAME} and {SERVICE_PORT_ENV_NAME} are not set: not running in a pod "
            "(outside a cluster, give --kubeconfig PATH)")
    for name in ("token", "ca.crt"):
        if not os.path.isfile(os.path.join(directory, name)):
            raise kube_config.ConfigException(
                f"no service-account {name} in {directory} (is the token mounted? "
                f"automountServiceAccountToken must not be false; {SERVICE_ACCOUNT_DIR_ENV} names another directory)")
    InClusterConfigLoader(
        token_filename=os.path.join(directory, "token"),
        cert_filename=os.path.join(directory, "ca.crt"),
        try_refresh_token=True,
    ).load_and_set(configuration)


class KubernetesSource:
    """See the module docstring. `run` until `stop` is set; then every thread is joined."""

    name = "kubernetes"

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | None = None,
        namespaces: Sequence[str] = (),
        root_namespace: str = "istio-system",
        *,
        context: str | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        watch_timeout: float = 300.0,
        page_size: int = 500,
        request_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._namespaces = tuple(namespaces)
        self._root_namespace = root_namespace
        self._settings = ReflectorSettings(
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            watch_timeout=watch_timeout,
            page_size=page_size,
            request_timeout=request_timeout,
        )
        self._stop_timeout = stop_timeout
        self._synced = False
        self._reflectors: list[Reflector] = []

    @property
    def synced(self) -> bool:
        """True once every reflector has completed its first list."""
        return self._synced

    @property
    def origins(self) -> list[str]:
        """The store origins this source writes (one per kind and namespace scope)."""
        return [t.origin for t in watch_targets(self._namespaces, self._root_namespace)]

    @property
    def resource_versions(self) -> dict[str, str]:
        """The resourceVersion each reflector would resume from (for tests and /debug)."""
        return {r.target.origin: r.state.resource_version for r in self._reflectors}

    @property
    def request_counts(self) -> dict[str, tuple[int, int]]:
        """(lists, watches) each reflector has made so far (for tests and /debug)."""
        return {r.target.origin: (r.lists, r.watches) for r in self._reflectors}

    async def run(self, sink: ConfigSink, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        configuration = await asyncio.to_thread(load_client_configuration, self._kubeconfig, self._context)
        targets = watch_targets(self._namespaces, self._root_namespace)
        unsynced = {t.origin for t in targets}
        running = True

        def apply(ops: list[Op]) -> None:  # on the loop thread, in arrival order
            if not running:
                return  # a straggler from a thread that was being stopped
            for op in ops:
                try:
                    _apply(sink, op)
                except Exception:  # one bad write must not poison the rest of the batch
                    log.exception("kubernetes: applying %s failed", type(op).__name__)
                if isinstance(op, Synced):
                    unsynced.discard(op.origin)
                    if not unsynced and not self._synced:
                        self._synced = True
                        sink.mark_synced(self.name)
                        log.info("kubernetes: initial sync complete (%d watches)", len(targets))

        def deliver(ops: list[Op]) -> None:  # on a reflector thread
            loop.call_soon_threadsafe(apply, ops)

        # The reflectors retry with backoff and jitter themselves: urllib3's own immediate retries
        # (three by default) would only hammer a restarting apiserver and log a warning each.
        configuration.retries = False

        def make_client() -> ApiClient:
            client = ApiClient(configuration)
            client.user_agent = USER_AGENT
            return client

        self._reflectors = [Reflector(t, make_client, deliver, self._settings) for t in targets]
        scope = ", ".join(self._namespaces) if self._namespaces else "all namespaces"
        log.info("kubernetes: watching %s (%d watches) at %s", scope, len(targets), configuration.host)
        try:
            for reflector in self._reflectors:
                reflector.start()
            await stop.wait()
        finally:
            running = False
            await self._stop_all()

    async def _stop_all(self) -> None:
        for reflector in self._reflectors:
            reflector.stop()
        deadline = time.monotonic() + self._stop_timeout

        def join_all() -> list[str]:
            return [r.target.origin for r in self._reflectors if not r.join(max(0.0, deadline - time.monotonic()))]

        stuck = await asyncio.to_thread(join_all)
        if stuck:  # daemon threads: they cannot hold the process, but say so
            log.warning("kubernetes: reflectors still running after %.0fs: %s", self._stop_timeout, stuck)


def _apply(sink: ConfigSink, op: Op) -> None:
    match op:
        case Replace(origin, objects):
            sink.replace(origin, objects)
        case Upsert(origin, obj):
            sink.upsert(origin, obj)
        case Delete(origin, ref):
            sink.delete(origin, ref)
        case Report(origin, problems):
            sink.report(origin, problems)
        case Synced():
            pass
