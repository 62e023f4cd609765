"""Kubernetes core objects (v1 Pod, Service, Namespace) from their manifest / API JSON form.

Only the fields the translator uses are read; the rest of a Pod or Service is ignored. Wrong
types and values the API server would refuse are reported with their field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xds_server.config.kube import ContainerPort, Namespace, Pod, Service, ServicePort
from xds_server.config.refs import FrozenDict, ObjectMeta
from xds_server.config.validate_fields import Report
from xds_server.config.validate_names import iana_svc_name_error, ip_error, port_error

_L4_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


def parse_pod(doc: Mapping[str, Any], meta: ObjectMeta, report: Report) -> Pod:
    spec = report.mapping(doc, "spec", "")
    status = report.mapping(doc, "status", "")
    ips = _pod_ips(status, report)
    metadata = doc.get("metadata")
    terminating = isinstance(metadata, Mapping) and metadata.get("deletionTimestamp") is not None
    ready = False
    for path, cond in report.items(status, "conditions", "status"):
        if report.string(cond, "type", path) == "Ready":
            ready = report.string(cond, "status", path) == "True"
    ports: list[ContainerPort] = []
    for cpath, container in report.items(spec, "containers", "spec"):
        for ppath, port in report.items(container, "ports", cpath):
            number = report.integer(port, "containerPort", ppath)
            if number is None:
                if "containerPort" not in port:
                    report.error(f"{ppath}.containerPort", "required")
                continue
            if not report.check(f"{ppath}.containerPort", port_error(number)):
                continue
            name = report.string(port, "name", ppath)
            if name:
                report.check(f"{ppath}.name", iana_svc_name_error(name))
            protocol = report.string(port, "protocol", ppath, "TCP")
            if protocol not in _L4_PROTOCOLS:
                report.error(
                    f"{ppath}.protocol", f"unknown value {protocol!r} (one of {', '.join(_L4_PROTOCOLS)})"
                )
            ports.append(ContainerPort(number, name, protocol))
    account = report.string(spec, "serviceAccountName", "spec") or report.string(
        spec, "serviceAccount", "spec"
    )
    return Pod(
        meta=meta,
        ips=ips,
        ready=ready and not terminating,
        container_ports=tuple(ports),
        service_account=account or "default",
        node_name=report.string(spec, "nodeName", "spec"),
        terminating=terminating,
    )


def _pod_ips(status: Mapping[str, Any], report: Report) -> tuple[str, ...]:
    ips: list[str] = []
    for path, entry in report.items(status, "podIPs", "status"):
        ip = report.string(entry, "ip", path)
        if ip and report.check(f"{path}.ip", ip_error(ip)) and ip not in ips:
            ips.append(ip)
    first = report.string(status, "podIP", "status")
    if first and report.check("status.podIP", ip_error(first)):
        if first in ips:
            ips.remove(first)
        ips.insert(0, first)  # status.podIP is the primary address
    return tuple(ips)


def parse_service(doc: Mapping[str, Any], meta: ObjectMeta, report: Report) -> Service:
    spec = report.mapping(doc, "spec", "")
    selector = report.string_map(spec, "selector", "spec")
    svc_type = report.string(spec, "type", "spec", "ClusterIP")
    if svc_type not in _SERVICE_TYPES:
        report.error("spec.type", f"unknown value {svc_type!r} (one of {', '.join(_SERVICE_TYPES)})")
    cluster_ip = report.string(spec, "clusterIP", "spec")
    if cluster_ip and cluster_ip != "None":
        report.check("spec.clusterIP", ip_error(cluster_ip))
    external_name = report.string(spec, "externalName", "spec")
    if svc_type == "ExternalName" and not external_name:
        report.error("spec.externalName", "required when type is ExternalName")
    ports: list[ServicePort] = []
    names: set[str] = set()
    items = report.items(spec, "ports", "spec")
    for path, port in items:
        number = report.integer(port, "port", path)
        if number is None:
            if "port" not in port:
                report.error(f"{path}.port", "required")
            continue
        if not report.check(f"{path}.port", port_error(number)):
            continue
        name = report.string(port, "name", path)
        if name in names:
            report.error(f"{path}.name", f"duplicate port name {name!r}")
        names.add(name)
        if not name and len(items) > 1:
            report.error(f"{path}.name", "required when the service has more than one port")
        protocol = report.string(port, "protocol", path, "TCP")
        if protocol not in _L4_PROTOCOLS:
            report.error(
                f"{path}.protocol", f"unknown value {protocol!r} (one of {', '.join(_L4_PROTOCOLS)})"
            )
        ports.append(
            ServicePort(
                port=number,
                name=name,
                protocol=protocol,
                app_protocol=report.string(port, "appProtocol", path),
                target_port=_target_port(port, path, report),
            )
        )
    return Service(
        meta=meta,
        ports=tuple(ports),
        selector=FrozenDict(selector) if selector else None,  # {} selects nothing, like no selector
        cluster_ip=cluster_ip,
        type=svc_type,
        external_name=external_name,
        publish_not_ready_addresses=report.boolean(spec, "publishNotReadyAddresses", "spec"),
    )


def _target_port(port: Mapping[str, Any], path: str, report: Report) -> int | str | None:
    """int-or-string: a number, or the name of a container port."""
    value = port.get("targetPort")
    here = f"{path}.targetPort"
    if value is None:
        return None
    if isinstance(value, str):
        if value.isascii() and value.isdigit():
            value = int(value)  # the API server's IntOrString reads "8080" as a name; be kind
        else:
            report.check(here, iana_svc_name_error(value))
            return value
    if isinstance(value, bool) or not isinstance(value, int):
        report.error(here, "expected an integer or a port name")
        return None
    report.check(here, port_error(value))
    return value


def parse_namespace(meta: ObjectMeta) -> Namespace:
    return Namespace(meta=meta)
