"""The MeshConfig subset xds-server honours, with Istio's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_server.config.refs import Kind, ObjectMeta, ObjectRef

ALLOW_ANY = "ALLOW_ANY"
REGISTRY_ONLY = "REGISTRY_ONLY"


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """From `--mesh-config FILE` or ConfigMap `istio` (key `mesh`) in the root namespace."""

    meta: ObjectMeta = field(default_factory=lambda: ObjectMeta(name="mesh"))
    root_namespace: str = "istio-system"
    outbound_traffic_policy: str = ALLOW_ANY  # ALLOW_ANY | REGISTRY_ONLY
    connect_timeout_s: float = 10.0
    inbound_traffic_policy: str = "PASSTHROUGH"  # PASSTHROUGH | LOCALHOST
    default_service_export_to: tuple[str, ...] = ("*",)
    default_virtual_service_export_to: tuple[str, ...] = ("*",)
    default_destination_rule_export_to: tuple[str, ...] = ("*",)
    protocol_detection_timeout_s: float = 0.0
    dns_refresh_rate_s: float = 60.0
    trust_domain: str = "cluster.local"

    kind = Kind.MESH_CONFIG

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.MESH_CONFIG, self.meta.namespace, self.meta.name)
