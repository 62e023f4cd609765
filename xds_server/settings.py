"""Frozen settings, built from the command line (cli.py) or directly by tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    config_dir: str | None = None
    kubernetes: bool = False
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    mesh_config: str | None = None
    xds_host: str = "0.0.0.0"
    xds_port: int = 15010  # 0: pick a free port (tests)
    admin_host: str = "127.0.0.1"
    admin_port: int = 15014  # 0: pick a free port; -1: no admin server
    domain_suffix: str = "cluster.local"
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    debounce_quiet: float = 0.1
    debounce_max: float = 1.0
    drain_seconds: float = 5.0
    max_connection_age: float = 0.0
    max_connection_age_grace: float = 10.0  # istiod's MaxServerConnectionAgeGrace default
    send_timeout: float = 60.0
    max_receive_bytes: int = 32 * 1024 * 1024
    # Response bytes built and not yet handed through HTTP/2 flow control, over all streams
    # (xds/budget.py): the server's memory no longer depends on its clients' pace. 0: no bound.
    max_bytes_in_flight: int = 128 * 1024 * 1024
    reuse_port: bool = False  # a worker of `serve --workers N`: share the xDS port (SO_REUSEPORT)
    # Admission (docs/security.md): new xDS streams per second, with a burst; a stream
    # waits up to max_admission_wait for its turn, beyond that it is refused with RESOURCE_EXHAUSTED.
    # A waiting stream costs a coroutine; a refused one costs a reconnect and Envoy's backoff (0.5 s
    # doubling to 30 s), which stretched 2,000 Envoys connecting at once with a 1 s wait to 44 s
    # (bench/RESULTS.md). So streams queue for long and arrive at about what one core serves.
    max_new_streams_per_second: float = 200.0  # 0: unlimited
    new_stream_burst: int = 400
    max_admission_wait: float = 10.0
    # Keepalive: the server pings idle connections every keepalive_interval (drop after
    # keepalive_timeout) and accepts client pings at most every keepalive_min_client_ping.
    keepalive_interval: float = 30.0
    keepalive_timeout: float = 10.0
    keepalive_min_client_ping: float = 15.0

    @property
    def xds_bind_address(self) -> str:
        """gRPC bind address: `unix:/path` (xds_host given as `unix://...` or `unix:...`), or host:port."""
        host = self.xds_host
        if host.startswith("unix:"):
            return "unix:" + host[len("unix://"):] if host.startswith("unix://") else host
        return f"[{host}]:{self.xds_port}" if ":" in host else f"{host}:{self.xds_port}"
