"""Istio networking objects: metadata plus the typed spec (protos/.../istio_config.proto)."""

from __future__ import annotations

from dataclasses import dataclass

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.refs import Kind, ObjectMeta, ObjectRef

# Re-exported so that callers spell enums once: pb.CaptureMode.NONE etc.
SidecarSpec = pb.Sidecar
ServiceEntrySpec = pb.ServiceEntry


@dataclass(frozen=True, slots=True, eq=False)
class IstioSidecar:
    meta: ObjectMeta
    spec: pb.Sidecar  # treat as read-only
    api_version: str = "networking.istio.io/v1"

    kind = Kind.SIDECAR

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.SIDECAR, self.meta.namespace, self.meta.name)


@dataclass(frozen=True, slots=True, eq=False)
class IstioServiceEntry:
    meta: ObjectMeta
    spec: pb.ServiceEntry  # treat as read-only
    api_version: str = "networking.istio.io/v1"

    kind = Kind.SERVICE_ENTRY

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.SERVICE_ENTRY, self.meta.namespace, self.meta.name)
