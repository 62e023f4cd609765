"""Istio's ServiceEntry rules (istio/istio `pkg/config/validation/validation.go` `ValidateServiceEntry`)."""

from __future__ import annotations

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import validate_common as common
from xds_server.config.address import UNIX_PREFIX
from xds_server.config.validate_fields import Report
from xds_server.config.validate_names import (
    fqdn_error,
    ip_subnet_error,
    is_http,
    is_ip,
    is_tcp,
    is_tls,
    label_key_error,
    label_value_error,
    partial_wildcard_error,
    port_error,
    port_name_error,
    protocol_error,
    unix_address_error,
    wildcard_domain_error,
)

_SE = pb.ServiceEntry


def validate_service_entry(spec: pb.ServiceEntry, namespace: str, report: Report) -> None:
    resolution = _SE.Resolution.Name(spec.resolution)
    if spec.HasField("workload_selector"):
        common.workload_selector(
            spec.workload_selector, "spec.workloadSelector", report, "every workload in the namespace"
        )
        if spec.endpoints:
            report.error("spec.workloadSelector", "only one of workloadSelector or endpoints is allowed")
    _hosts(spec, report)
    _addresses(spec, report)
    port_names = _ports(spec, report)
    if spec.resolution == _SE.NONE:
        if spec.endpoints:
            report.error("spec.endpoints", "no endpoints may be given with resolution NONE")
        if spec.HasField("workload_selector"):
            report.warn("spec.workloadSelector", "has no effect with resolution NONE")
    elif spec.resolution == _SE.STATIC:
        for i, ep in enumerate(spec.endpoints):
            _static_endpoint(ep, f"spec.endpoints[{i}]", port_names, report)
    elif spec.resolution in (_SE.DNS, _SE.DNS_ROUND_ROBIN):
        _dns(spec, resolution, port_names, report)
    else:
        report.error("spec.resolution", f"{resolution} is not supported by xds-server")
    # Plain TCP cannot tell several hosts apart (no Host header, no SNI), unless hosts are ignored.
    if spec.resolution != _SE.NONE and len(spec.hosts) > 1:
        for i, port in enumerate(spec.ports):
            if not is_http(port.protocol) and not is_tls(port.protocol):
                report.error(
                    f"spec.ports[{i}].protocol",
                    "multiple hosts need HTTP or TLS ports "
                    f"(got {port.protocol or 'unset'}) unless resolution is NONE",
                )
                break
    common.export_to(list(spec.export_to), namespace, "spec.exportTo", report, service_entry=True)


def _hosts(spec: pb.ServiceEntry, report: Report) -> None:
    if not spec.hosts:
        report.error("spec.hosts", "a service entry must have at least one host")
    for i, host in enumerate(spec.hosts):
        here = f"spec.hosts[{i}]"
        if host == "*":
            report.error(here, "invalid host * (a full wildcard is not allowed)")
            continue
        report.check(here, wildcard_domain_error(host))
        if err := partial_wildcard_error(host):
            report.warn(here, err)


def _addresses(spec: pb.ServiceEntry, report: Report) -> None:
    cidr = False
    for i, address in enumerate(spec.addresses):
        cidr = cidr or "/" in address
        report.check(f"spec.addresses[{i}]", ip_subnet_error(address))
    if cidr and spec.resolution not in (_SE.NONE, _SE.STATIC):
        report.error("spec.addresses", "CIDR addresses are allowed only with resolution NONE or STATIC")


def _ports(spec: pb.ServiceEntry, report: Report) -> set[str]:
    names: set[str] = set()
    numbers: set[int] = set()
    if not spec.ports:
        report.error("spec.ports", "a service entry must have at least one port")
    for i, port in enumerate(spec.ports):
        path = f"spec.ports[{i}]"
        if port.name in names:
            report.error(f"{path}.name", f"port name {port.name!r} already defined")
        if port.number in numbers:
            report.error(f"{path}.number", f"port {port.number} already defined")
        names.add(port.name)
        numbers.add(port.number)
        report.check(f"{path}.name", port_name_error(port.name))
        report.check(f"{path}.protocol", protocol_error(port.protocol))
        report.check(f"{path}.number", port_error(port.number))
        if port.target_port:
            report.check(f"{path}.targetPort", port_error(port.target_port))
            if spec.resolution == _SE.NONE:
                report.warn(f"{path}.targetPort", "has no effect with resolution NONE")
        if not spec.addresses and port.protocol in ("", "TCP"):
            report.warn(
                "spec.addresses",
                f"required for TCP (or unset protocol) port {port.number} unless proxies auto-allocate "
                "addresses; without one, any destination on that port matches this entry",
            )
    return names


def _endpoint_common(ep: pb.WorkloadEntry, path: str, port_names: set[str], report: Report) -> None:
    for name, number in ep.ports.items():
        here = f"{path}.ports[{name}]"
        if name not in port_names:
            report.error(here, f"port {name!r} is not defined by the service entry")
        report.check(here, port_name_error(name) or port_error(number))
    for key, value in ep.labels.items():
        report.check(f"{path}.labels[{key}]", label_key_error(key) or label_value_error(value))


def _static_endpoint(ep: pb.WorkloadEntry, path: str, port_names: set[str], report: Report) -> None:
    address = ep.address
    if not address:
        if not ep.network:
            report.error(f"{path}.address", "required")
        else:
            report.warn(f"{path}.address", f"unset with network {ep.network!r}")
    elif address.startswith(UNIX_PREFIX):
        report.check(f"{path}.address", unix_address_error(address[len(UNIX_PREFIX) :]))
        if ep.ports:
            report.error(f"{path}.ports", f"unix endpoint {address!r} must not have ports")
        if len(port_names) != 1:
            report.error(f"{path}.address", "exactly one service port is required for unix endpoints")
    elif not is_ip(address):
        report.error(f"{path}.address", f"{address!r} is not an IP address (required with resolution STATIC)")
    _endpoint_common(ep, path, port_names, report)


def _dns(spec: pb.ServiceEntry, resolution: str, port_names: set[str], report: Report) -> None:
    if not spec.endpoints:
        for i, host in enumerate(spec.hosts):
            if host != "*" and fqdn_error(host):
                report.error(
                    f"spec.hosts[{i}]",
                    f"must be an FQDN (no wildcard) with resolution {resolution} and no endpoints",
                )
    if spec.resolution == _SE.DNS_ROUND_ROBIN and len(spec.endpoints) > 1:
        report.error("spec.endpoints", f"at most one endpoint is allowed with resolution {resolution}")
    for i, ep in enumerate(spec.endpoints):
        path = f"spec.endpoints[{i}]"
        if not is_ip(ep.address) and fqdn_error(ep.address):
            report.error(f"{path}.address", f"{ep.address!r} is not a valid FQDN or IP address")
        _endpoint_common(ep, path, port_names, report)
    if spec.HasField("workload_selector"):
        report.warn("spec.workloadSelector", f"has no effect with resolution {resolution}")
    if spec.addresses and len(spec.hosts) > 1 and any(is_tcp(p.protocol) for p in spec.ports):
        report.warn("spec.hosts", "more than one host together with addresses and a TCP port")
