"""Istio's Sidecar rules (istio/istio `pkg/config/validation/validation.go` `ValidateSidecar`).

Every rule of what a Sidecar may say lives here; what it means lives in translate/.
"""

from __future__ import annotations

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import validate_common as common
from xds_server.config.address import UNIX_PREFIX, split_host_port
from xds_server.config.validate_fields import Report
from xds_server.config.validate_names import (
    fqdn_error,
    ip_error,
    is_dns1123_label,
    is_http,
    is_tls,
    partial_wildcard_error,
    port_error,
    port_name_error,
    protocol_error,
    unix_address_error,
    wildcard_domain_error,
)

_CAPTURE = pb.CaptureMode
_TLS = pb.ServerTLSSettings
_DEFAULT_ENDPOINT_HOSTS = ("", "127.0.0.1", "0.0.0.0", "::1", "::")
_DEFAULT_ENDPOINT_FORMS = "127.0.0.1:PORT, [::1]:PORT, 0.0.0.0:PORT, [::]:PORT or unix:///path"


def validate_sidecar(spec: pb.Sidecar, namespace: str, report: Report) -> None:
    if spec.HasField("workload_selector"):
        common.workload_selector(
            spec.workload_selector, "spec.workloadSelector", report, "every workload in the namespace"
        )
    if not (
        spec.egress
        or spec.ingress
        or spec.HasField("outbound_traffic_policy")
        or spec.HasField("inbound_connection_pool")
    ):
        report.error(
            "spec",
            "empty configuration provided (no ingress, egress, outboundTrafficPolicy "
            "or inboundConnectionPool)",
        )
        return
    _ingress(spec, report)
    if spec.HasField("inbound_connection_pool"):
        common.connection_pool(spec.inbound_connection_pool, "spec.inboundConnectionPool", report)
    _egress(spec, report)
    if spec.HasField("outbound_traffic_policy"):
        _outbound_traffic_policy(spec.outbound_traffic_policy, report)


# ---------------------------------------------------------------- ingress
def _ingress(spec: pb.Sidecar, report: Report) -> None:
    seen_ports: set[int] = set()
    for i, listener in enumerate(spec.ingress):
        path = f"spec.ingress[{i}]"
        if not listener.HasField("port"):
            report.error(f"{path}.port", "required for ingress listeners")
            continue
        port = listener.port
        if port.target_port:
            report.error(f"{path}.port.targetPort", "has no impact on Sidecars; remove it")
        if port.name:
            report.check(f"{path}.port.name", port_name_error(port.name))
        report.check(f"{path}.port.protocol", protocol_error(port.protocol))
        report.check(f"{path}.port.number", port_error(port.number))
        if listener.bind.startswith(UNIX_PREFIX):
            report.error(f"{path}.bind", "unix domain sockets are not allowed for ingress listeners")
        elif listener.bind:
            report.check(f"{path}.bind", ip_error(listener.bind))
        if port.number in seen_ports:
            report.error(f"{path}.port.number", f"ports on IP bound listeners must be unique ({port.number})")
        seen_ports.add(port.number)
        if listener.default_endpoint:
            _default_endpoint(listener.default_endpoint, f"{path}.defaultEndpoint", report)
        if listener.HasField("tls"):
            ingress_tls(listener.tls, listener.port.protocol, f"{path}.tls", report)
        if listener.HasField("connection_pool"):
            common.connection_pool(listener.connection_pool, f"{path}.connectionPool", report)
            if listener.connection_pool.HasField("http") and not is_http(port.protocol):
                report.warn(
                    f"{path}.connectionPool.http",
                    f"HTTP settings are configured for port {port.number} but its protocol is not HTTP "
                    f"({port.protocol or 'unset'}); only TCP settings apply",
                )


def _default_endpoint(value: str, path: str, report: Report) -> None:
    if value.startswith(UNIX_PREFIX):
        report.check(path, unix_address_error(value[len(UNIX_PREFIX) :]))
        return
    parts = split_host_port(value)
    if parts is None:
        report.error(path, f"{value!r} must be of the form {_DEFAULT_ENDPOINT_FORMS}")
        return
    host, port = parts
    if host not in _DEFAULT_ENDPOINT_HOSTS:
        report.error(path, f"{value!r} must be of the form {_DEFAULT_ENDPOINT_FORMS}")
    if not port.isascii() or not port.isdigit():
        report.error(path, f"port {port!r} is not a number")
    else:
        report.check(path, port_error(int(port)))


def ingress_tls(tls: pb.ServerTLSSettings, protocol: str, path: str, report: Report) -> None:
    """An ingress listener's `tls` (or the 2020 edition's `inboundTls`) served on a `protocol` port."""
    if tls.subject_alt_names:
        report.error(f"{path}.subjectAltNames", "not supported in sidecar ingress tls")
    if tls.https_redirect:
        report.error(f"{path}.httpsRedirect", "not supported in sidecar ingress tls")
    if tls.credential_name:
        report.error(f"{path}.credentialName", "not supported in sidecar ingress tls")
    if tls.mode in (_TLS.ISTIO_MUTUAL, _TLS.AUTO_PASSTHROUGH):
        report.error(f"{path}.mode", f"cannot be {_TLS.TLSmode.Name(tls.mode)} in sidecar ingress tls")
    if not is_tls(protocol):
        report.error(
            f"{path.rsplit('.', 1)[0]}.port.protocol",
            f"must be HTTPS or TLS when {path.rsplit('.', 1)[1]} is set (got {protocol or 'unset'})",
        )
    common.server_tls(tls, path, report)


# ---------------------------------------------------------------- egress
def _egress(spec: pb.Sidecar, report: Report) -> None:
    seen_ports: set[int] = set()
    seen_uds: set[str] = set()
    catch_all_seen = False
    last = len(spec.egress) - 1
    for i, listener in enumerate(spec.egress):
        path = f"spec.egress[{i}]"
        if not listener.HasField("port"):
            # One portless (catch-all) listener at most, and it must come last.
            if catch_all_seen:
                report.error(f"{path}.port", "egress can have only one listener with empty port")
            elif i != last:
                report.error(f"{path}.port", "the egress listener with empty port must be the last one")
            else:
                catch_all_seen = True
            if listener.bind:
                report.error(f"{path}.bind", "requires a port")
        else:
            _egress_port(listener, path, report)
            if listener.port.number == 0:
                if listener.bind in seen_uds:
                    report.error(f"{path}.bind", f"unix domain socket {listener.bind!r} is used twice")
                seen_uds.add(listener.bind)
            else:
                if listener.port.number in seen_ports:
                    report.error(
                        f"{path}.port.number",
                        f"ports on IP bound listeners must be unique ({listener.port.number})",
                    )
                seen_ports.add(listener.port.number)
        _egress_hosts(list(listener.hosts), f"{path}.hosts", report)


def _egress_port(listener: pb.IstioEgressListener, path: str, report: Report) -> None:
    port, bind = listener.port, listener.bind
    if port.target_port:
        report.error(f"{path}.port.targetPort", "has no impact on Sidecars; remove it")
    if port.name:
        report.check(f"{path}.port.name", port_name_error(port.name))
    report.check(f"{path}.port.protocol", protocol_error(port.protocol))
    if port.number == 0:
        if not bind.startswith(UNIX_PREFIX):
            report.error(f"{path}.bind", "a listener with port 0 must bind a unix domain socket (unix://...)")
        else:
            report.check(f"{path}.bind", unix_address_error(bind[len(UNIX_PREFIX) :]))
        if listener.capture_mode not in (_CAPTURE.DEFAULT, _CAPTURE.NONE):
            report.error(f"{path}.captureMode", "must be DEFAULT or NONE for unix domain socket listeners")
        return
    report.check(f"{path}.port.number", port_error(port.number))
    if bind.startswith(UNIX_PREFIX):
        report.error(f"{path}.bind", "a unix domain socket bind requires port number 0")
    elif bind:
        report.check(f"{path}.bind", ip_error(bind))


def _egress_hosts(hosts: list[str], path: str, report: Report) -> None:
    if not hosts:
        report.error(path, "egress listener must contain at least one host")
        return
    by_namespace: dict[str, set[str]] = {}
    for i, host in enumerate(hosts):
        here = f"{path}[{i}]"
        if not _host_ok(host, here, report):
            continue
        namespace, _, name = host.partition("/")
        names = by_namespace.setdefault(namespace, set())
        if name in names or "*" in names or (name == "*" and names):
            report.warn(here, f"duplicated egress host {host!r}")
        names.add(name)
    if "*" in by_namespace.get("*", ()) and len(by_namespace) > 1:
        report.warn(path, "`*/*` selects every service; other hosts add nothing")


def _host_ok(host: str, here: str, report: Report) -> bool:
    """`namespace/dnsName` (ValidateNamespaceSlashWildcardHostname for sidecars)."""
    if host.count("/") != 1:
        report.error(here, f"host {host!r} must be of the form namespace/dnsName")
        return False
    namespace, _, name = host.partition("/")
    ok = True
    if not namespace or not name:
        report.error(here, f"host {host!r}: namespace and dnsName cannot be empty")
        return False
    # `~` alone imports nothing; `~ns` excludes ns (Istio 1.31 exclusion form).
    bare = namespace[1:] if namespace.startswith("~") and len(namespace) > 1 else namespace
    if bare not in ("*", ".", "~") and not is_dns1123_label(bare):
        report.error(here, f"invalid namespace {namespace!r} in host {host!r}")
        ok = False
    if name != "*" and "." not in name:
        report.error(here, f"short name {name!r} is not allowed; use an FQDN or a wildcard")
        return False
    for err in (wildcard_domain_error(name), partial_wildcard_error(name)):
        if err:
            report.error(here, err)
            ok = False
            break
    return ok


# ---------------------------------------------------------------- outbound policy
def _outbound_traffic_policy(policy: pb.OutboundTrafficPolicy, report: Report) -> None:
    if not policy.HasField("egress_proxy"):
        return
    path = "spec.outboundTrafficPolicy.egressProxy"
    if policy.mode != pb.OutboundTrafficPolicy.ALLOW_ANY:
        report.error(path, "may be set only with mode ALLOW_ANY")
        return
    proxy = policy.egress_proxy
    if not proxy.host:
        report.error(f"{path}.host", "required")
    elif proxy.host == "*":
        report.error(f"{path}.host", "invalid destination host *")
    else:
        report.check(f"{path}.host", fqdn_error(proxy.host))
    if proxy.subset and not is_dns1123_label(proxy.subset):
        report.error(f"{path}.subset", f"invalid subset name {proxy.subset!r}")
    if not proxy.HasField("port"):
        report.error(f"{path}.port", "required")
    else:
        report.check(f"{path}.port.number", port_error(proxy.port.number))
