"""Rules shared by Sidecar and ServiceEntry: selectors, connection pools, TLS, exportTo.

Mirrors istio/istio `pkg/config/validation/validation.go` (`ValidateAlphaWorkloadSelector`,
`validateConnectionPool`, `validateTLSOptions`, `validateExportTo`).
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.duration_pb2 import Duration

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.validate_fields import Report
from xds_server.config.validate_names import is_dns1123_label, label_key_error, label_value_error

_TLS = pb.ServerTLSSettings


def workload_selector(sel: pb.WorkloadSelector, path: str, report: Report, applies_to: str) -> None:
    selector_labels(sel.labels.items(), f"{path}.labels", path, report, applies_to)


def selector_labels(labels: Iterable[tuple[str, str]], labels_path: str, path: str, report: Report,
                    applies_to: str) -> None:
    """istiod's selector label checks (validation.go validateWorkloadSelector), shared by every kind."""
    empty = True
    for key, value in labels:
        empty = False
        here = f"{labels_path}[{key}]"
        if not key:
            report.error(labels_path, "empty key is not supported in selector")
        elif "*" in key or "*" in value:
            report.error(here, f"wildcard is not supported in selector: {key}={value}")
        else:
            report.check(here, label_key_error(key) or label_value_error(value))
    if empty:
        report.warn(path, f"workload selector specified without labels; applies to {applies_to}")


def duration(d: Duration, path: str, report: Report) -> None:
    """Istio's ValidateDuration: at least 1ms, millisecond precision."""
    total_ns = d.seconds * 10**9 + d.nanos
    if total_ns < 10**6:
        report.error(path, "duration must be at least 1ms")
    elif total_ns % 10**6:
        report.error(path, "only durations to ms precision are supported")


def connection_pool(cp: pb.ConnectionPoolSettings, path: str, report: Report) -> None:
    if not cp.HasField("http") and not cp.HasField("tcp"):
        report.error(path, "connection pool must have at least one of tcp, http")
        return
    if cp.HasField("http"):
        http, here = cp.http, f"{path}.http"
        for name, value in (
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ):
            if value < 0:
                report.error(f"{here}.{name}", "must be non-negative")
        if http.HasField("idle_timeout"):
            duration(http.idle_timeout, f"{here}.idleTimeout", report)
        upgrade = pb.ConnectionPoolSettings.HTTPSettings.UPGRADE
        if http.h2_upgrade_policy == upgrade and http.use_client_protocol:
            report.error(f"{here}.useClientProtocol", "must not be true when h2UpgradePolicy is UPGRADE")
    if cp.HasField("tcp"):
        tcp, here = cp.tcp, f"{path}.tcp"
        if tcp.max_connections < 0:
            report.error(f"{here}.maxConnections", "must be non-negative")
        for name, field in (("connectTimeout", "connect_timeout"),
                            ("maxConnectionDuration", "max_connection_duration")):
            if tcp.HasField(field):
                duration(getattr(tcp, field), f"{here}.{name}", report)
        idle = tcp.idle_timeout
        # istio ValidateConnectionPool: an idleTimeout under 1ms (0s) disables the timeout.
        if tcp.HasField("idle_timeout") and not (idle.seconds == 0 and idle.nanos < 1_000_000):
            duration(idle, f"{here}.idleTimeout", report)
        if tcp.HasField("tcp_keepalive"):
            ka = tcp.tcp_keepalive
            if ka.HasField("time"):
                duration(ka.time, f"{here}.tcpKeepalive.time", report)
            if ka.HasField("interval"):
                duration(ka.interval, f"{here}.tcpKeepalive.interval", report)


def server_tls(tls: pb.ServerTLSSettings, path: str, report: Report) -> None:
    """validateTLSOptions: certificates each mode needs."""
    mode = tls.mode
    if tls.min_protocol_version in (_TLS.TLSV1_0, _TLS.TLSV1_1) and not tls.cipher_suites:
        report.warn(f"{path}.minProtocolVersion", "TLS versions below TLSV1_2 need compatible cipherSuites")
    if mode == _TLS.ISTIO_MUTUAL:
        for name, value in (
            ("serverCertificate", tls.server_certificate),
            ("privateKey", tls.private_key),
            ("caCertificates", tls.ca_certificates),
            ("credentialName", tls.credential_name),
        ):
            if value:
                report.error(f"{path}.{name}", "must not be set with ISTIO_MUTUAL")
        return
    if mode in (_TLS.PASSTHROUGH, _TLS.AUTO_PASSTHROUGH) and (
        tls.ca_crl or tls.server_certificate or tls.private_key or tls.ca_certificates or tls.credential_name
    ):
        report.warn(f"{path}.mode", f"{_TLS.TLSmode.Name(mode)} does not use certificates; they are ignored")
    mutual = mode in (_TLS.MUTUAL, _TLS.OPTIONAL_MUTUAL)
    if mode in (_TLS.SIMPLE, _TLS.MUTUAL, _TLS.OPTIONAL_MUTUAL) and tls.credential_name:
        return  # certificates come from the credential
    mode_name = _TLS.TLSmode.Name(mode)
    if mode == _TLS.SIMPLE or mutual:
        if not tls.server_certificate:
            report.error(f"{path}.serverCertificate", f"required with {mode_name} TLS")
        if not tls.private_key:
            report.error(f"{path}.privateKey", f"required with {mode_name} TLS")
    if mutual and not tls.ca_certificates:
        report.error(f"{path}.caCertificates", f"required with {mode_name} TLS (the client CA bundle)")
    if tls.ca_crl:
        if tls.credential_name:
            report.error(f"{path}.caCrl", "not supported with credentialName")
        if mode == _TLS.SIMPLE:
            report.error(f"{path}.caCrl", "not supported with SIMPLE TLS")


def export_to(values: list[str], namespace: str, path: str, report: Report, service_entry: bool) -> None:
    """`*` public, `.` own namespace, `~` nobody (ServiceEntry only), or namespace names."""
    seen: set[str] = set()
    for i, value in enumerate(values):
        here = f"{path}[{i}]"
        key = namespace if value == "." else value
        if key in seen:
            note = f" (. is the namespace {namespace})" if "." in values and key == namespace else ""
            report.error(here, f"duplicate exportTo entry {value!r}{note}")
            continue
        if value in ("*", ".") or (value == "~" and service_entry) or is_dns1123_label(value):
            seen.add(key)
        else:
            allowed = "*, ., ~ or a namespace" if service_entry else "*, . or a namespace"
            report.error(here, f"invalid exportTo value {value!r} (one of {allowed})")
    if "*" in seen and len(values) > 1:
        report.error(path, "cannot have both public (*) and non-public exportTo values")
    if "~" in seen and len(values) > 1:
        report.error(path, "cannot export to no one (~) and someone")
