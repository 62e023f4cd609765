"""Typed, frozen config objects: the only shape the rest of the server sees.

Raw manifests (dicts) are turned into these by `xds_server.config.parse.parse`; nothing else
reads raw dicts.
"""

from xds_server.config.istio import IstioServiceEntry, IstioSidecar
from xds_server.config.kube import ContainerPort, Namespace, Pod, Service, ServicePort
from xds_server.config.mesh import MeshConfig
from xds_server.config.refs import Kind, ObjectMeta, ObjectRef, Problem
from xds_server.config.traffic_rules import IstioDestinationRule, IstioVirtualService

ConfigObject = (
    Pod | Service | Namespace | IstioSidecar | IstioServiceEntry | IstioVirtualService | IstioDestinationRule
    | MeshConfig
)

__all__ = [
    "ConfigObject",
    "ContainerPort",
    "IstioDestinationRule",
    "IstioServiceEntry",
    "IstioSidecar",
    "IstioVirtualService",
    "Kind",
    "MeshConfig",
    "Namespace",
    "ObjectMeta",
    "ObjectRef",
    "Pod",
    "Problem",
    "Service",
    "ServicePort",
]
