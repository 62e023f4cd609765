"""`xds-server bootstrap`: an Envoy bootstrap that connects to the server over ADS.

Delta ADS by default (as Istio since 1.22), `--sotw` for state of the world. The node sends
its (large) node message on the first request only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

import yaml

from xds_server.config.address import host_port

XDS_CLUSTER = "xds-grpc"


class BootstrapError(ValueError):
    pass


def parse_metadata(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE starting with { or [ is JSON (e.g. LABELS={"app":"a"})."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BootstrapError(f"--metadata {pair!r}: expected KEY=VALUE")
        if value.startswith(("{", "[")):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError as e:
                raise BootstrapError(f"--metadata {key}: invalid JSON: {e}") from None
        else:
            out[key] = value
    return out


def _split_host_port(text: str) -> tuple[str, int]:
    found = host_port(text)
    if found is None or not found[0] or not found[1]:
        raise BootstrapError(f"--xds-address {text!r}: expected HOST:PORT ([ADDR]:PORT for IPv6)")
    return found


def _unix_path(address: str) -> str:
    """The socket path of `unix:///path` or `unix:/path`, else ''."""
    if address.startswith("unix://"):
        return address[len("unix://"):]
    if address.startswith("unix:"):
        return address[len("unix:"):]
    return ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def node_cluster(node_id: str, metadata: dict[str, Any]) -> str:
    """Istio's service-cluster form `<app>.<namespace>` when it can be told, else the namespace."""
    parts = node_id.split("~")
    namespace = str(metadata.get("NAMESPACE") or (parts[2].partition(".")[2] if len(parts) == 4 else ""))
    labels = metadata.get("LABELS") if isinstance(metadata.get("LABELS"), dict) else {}
    app = labels.get("app") or labels.get("app.kubernetes.io/name") if labels else None
    if app and namespace:
        return f"{app}.{namespace}"
    return namespace or "xds-server"


def build_bootstrap(
    node_id: str,
    xds_address: str = "127.0.0.1:15010",
    admin_port: int = 15000,
    metadata: dict[str, Any] | None = None,
    *,
    sotw: bool = False,
    admin_address: str = "127.0.0.1",
    cluster: str = "",
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_server_name: str | None = None,
) -> dict[str, Any]:
    if not node_id:
        raise BootstrapError("--node-id must not be empty")
    metadata = dict(metadata or {})
    pipe = _unix_path(xds_address)
    host, port = ("", 0) if pipe else _split_host_port(xds_address)
    config_source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if pipe or _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Istio's keepalive: ping every 30 s, drop after 10 s without an answer.
                        "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": pipe}} if pipe else {
                "socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }
    if tls_ca or tls_cert:
        common: dict[str, Any] = {}
        if tls_ca:
            common["validation_context"] = {"trusted_ca": {"filename": tls_ca}}
        if tls_cert:
            if not tls_key:
                raise BootstrapError("--tls-cert needs --tls-key")
            common["tls_certificates"] = [{"certificate_chain": {"filename": tls_cert},
                                           "private_key": {"filename": tls_key}}]
        common["alpn_protocols"] = ["h2"]
        upstream: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        }
        if tls_server_name or not (pipe or _is_ip(host)):
            upstream["sni"] = tls_server_name or host
        if tls_server_name and tls_ca:
            common["validation_context"]["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": tls_server_name}}]
        xds_cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": upstream}
    return {
        "node": {"id": node_id, "cluster": cluster or node_cluster(node_id, metadata), "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC" if sotw else "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": config_source,
            "lds_config": config_source,
        },
        "static_resources": {"clusters": [xds_cluster]},
    }


def render(bootstrap: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(bootstrap, indent=2, sort_keys=False) + "\n"
    return yaml.safe_dump(bootstrap, sort_keys=False)


def run(args: argparse.Namespace) -> int:
    try:
        bootstrap = build_bootstrap(
            args.node_id, args.xds_address, args.admin_port, parse_metadata(args.metadata),
            sotw=args.sotw, admin_address=args.admin_address, cluster=args.cluster,
            tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
            tls_server_name=args.tls_server_name,
        )
    except BootstrapError as e:
        print(f"xds-server bootstrap: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(render(bootstrap, args.format))
    return 0
