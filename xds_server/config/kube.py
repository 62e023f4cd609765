"""Kubernetes core objects, reduced to the fields the translator uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_server.config import protocol
from xds_server.config.protocol import Protocol
from xds_server.config.refs import FrozenDict, Kind, ObjectMeta, ObjectRef


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Pod:
    meta: ObjectMeta
    ips: tuple[str, ...] = ()  # status.podIPs, first is status.podIP
    ready: bool = False  # status.conditions[type=Ready] and not terminating
    container_ports: tuple[ContainerPort, ...] = ()
    service_account: str = "default"
    node_name: str = ""
    terminating: bool = False  # metadata.deletionTimestamp set

    kind = Kind.POD

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.POD, self.meta.namespace, self.meta.name)

    @property
    def ip(self) -> str:
        return self.ips[0] if self.ips else ""


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"  # L4 protocol: TCP | UDP | SCTP
    app_protocol: str = ""
    # None: same as port; int: a number; str: a named container port
    target_port: int | str | None = None
    # What Istio makes of it (appProtocol, name prefix, well-known ports), parsed once from the above.
    istio_protocol: Protocol = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        found = protocol.from_kube_port(self.port, self.name, self.protocol, self.app_protocol)
        object.__setattr__(self, "istio_protocol", found)


@dataclass(frozen=True, slots=True)
class Service:
    meta: ObjectMeta
    ports: tuple[ServicePort, ...] = ()
    selector: FrozenDict | None = None  # None: selector-less service
    cluster_ip: str = ""  # "None" for headless
    type: str = "ClusterIP"
    external_name: str = ""
    publish_not_ready_addresses: bool = False

    kind = Kind.SERVICE

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.SERVICE, self.meta.namespace, self.meta.name)

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"


@dataclass(frozen=True, slots=True)
class Namespace:
    meta: ObjectMeta

    kind = Kind.NAMESPACE

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.NAMESPACE, "", self.meta.name)
