"""Who is asking: an Envoy node (id + metadata) turned into a Proxy.

Node id, the Istio way: `sidecar~<podIP>~<podName>.<namespace>~<namespace>.svc.cluster.local`.
Any other non-empty id is accepted as an unknown proxy (namespace from metadata, else default).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from xds_server.config.refs import EMPTY, FrozenDict

INTERCEPTION_MODES = ("REDIRECT", "TPROXY", "NONE")


class InvalidNode(ValueError):
    """The node cannot identify a proxy (the stream is refused with INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    node_id: str
    type: str = "sidecar"
    namespace: str = "default"
    pod_name: str = ""  # "" when the id is not in the Istio form
    dns_domain: str = "default.svc.cluster.local"
    ip: str = ""  # from the node id
    instance_ips: tuple[str, ...] = ()  # metadata INSTANCE_IPS, else (ip,)
    labels: FrozenDict = EMPTY  # metadata LABELS; a known Pod's labels win
    interception_mode: str = "REDIRECT"
    cluster_id: str = ""
    unprivileged: bool = False
    service_account: str = ""
    metadata: FrozenDict = EMPTY  # every string-valued metadata key, for debug views

    @property
    def key(self) -> str:
        """What the snapshot cache is keyed by."""
        return self.node_id

    @property
    def pod_key(self) -> str:
        """POD.NAMESPACE as istioctl and `render --proxy` name it."""
        return f"{self.pod_name}.{self.namespace}" if self.pod_name else self.node_id


def _str_map(value: Any) -> FrozenDict:
    if isinstance(value, Mapping):
        return FrozenDict({str(k): str(v) for k, v in value.items()})
    return EMPTY


def _ips(text: str) -> tuple[str, ...]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            continue
    return tuple(out)


def proxy_from_node(node_id: str, metadata: Mapping[str, Any] | None = None) -> Proxy:
    """Parse an Envoy node. Raises InvalidNode when the id is empty."""
    if not node_id:
        raise InvalidNode("node.id is empty")
    md = dict(metadata or {})
    parts = node_id.split("~")
    ptype, ip, pod_name, namespace, dns_domain = "sidecar", "", "", "", ""
    if len(parts) == 4:
        ptype, ip, pod_id, dns_domain = parts
        if ptype != "sidecar":
            raise InvalidNode(f"node.id {node_id!r}: proxy type {ptype!r} is not served (only 'sidecar')")
        if "." in pod_id:
            pod_name, _, namespace = pod_id.partition(".")
    namespace = str(md.get("NAMESPACE") or namespace or (dns_domain.split(".")[0] if dns_domain else "")
                    or "default")
    if pod_name and md.get("NAMESPACE") and pod_id.partition(".")[2] != md["NAMESPACE"]:
        pod_name = ""  # Istio: the pod key is trusted only when it agrees with NAMESPACE
    instance_ips = _ips(str(md.get("INSTANCE_IPS", ""))) or _ips(ip)
    mode = str(md.get("INTERCEPTION_MODE", "REDIRECT")).upper()
    if mode not in INTERCEPTION_MODES:
        mode = "REDIRECT"
    return Proxy(
        node_id=node_id,
        type=ptype,
        namespace=namespace,
        pod_name=pod_name,
        dns_domain=dns_domain or f"{namespace}.svc.cluster.local",
        ip=_ips(ip)[0] if _ips(ip) else "",
        instance_ips=instance_ips,
        labels=_str_map(md.get("LABELS")),
        interception_mode=mode,
        cluster_id=str(md.get("CLUSTER_ID", "")),
        unprivileged=str(md.get("UNPRIVILEGED_POD", "")).lower() == "true",
        service_account=str(md.get("SERVICE_ACCOUNT", "")),
        metadata=FrozenDict({k: v for k, v in md.items() if isinstance(v, str)}),
    )


def proxy_from_node_message(node: Any) -> Proxy:
    """From an envoy.config.core.v3.Node message (read once per stream: it can be 60 kB)."""
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    return proxy_from_node(node.id, metadata)
