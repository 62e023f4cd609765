"""VirtualService and DestinationRule: metadata plus the typed spec (protos/.../istio_config.proto).

Parsed and validated like Sidecar and ServiceEntry; what they mean for a proxy (visibility, lookup,
merging) lives in xds_server/mesh/virtual_services.py and xds_server/mesh/destination_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.refs import Kind, ObjectMeta, ObjectRef


@dataclass(frozen=True, slots=True, eq=False)
class IstioVirtualService:
    meta: ObjectMeta
    spec: pb.VirtualService  # treat as read-only
    api_version: str = "networking.istio.io/v1"

    kind = Kind.VIRTUAL_SERVICE

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.VIRTUAL_SERVICE, self.meta.namespace, self.meta.name)


@dataclass(frozen=True, slots=True, eq=False)
class IstioDestinationRule:
    meta: ObjectMeta
    spec: pb.DestinationRule  # treat as read-only
    api_version: str = "networking.istio.io/v1"

    kind = Kind.DESTINATION_RULE

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.DESTINATION_RULE, self.meta.namespace, self.meta.name)
