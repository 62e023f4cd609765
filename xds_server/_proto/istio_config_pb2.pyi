import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CaptureMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEFAULT: _ClassVar[CaptureMode]
    IPTABLES: _ClassVar[CaptureMode]
    NONE: _ClassVar[CaptureMode]
DEFAULT: CaptureMode
IPTABLES: CaptureMode
NONE: CaptureMode

class Sidecar(_message.Message):
    __slots__ = ("workload_selector", "ingress", "egress", "outbound_traffic_policy", "inbound_connection_pool")
    WORKLOAD_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    INGRESS_FIELD_NUMBER: _ClassVar[int]
    EGRESS_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_TRAFFIC_POLICY_FIELD_NUMBER: _ClassVar[int]
    INBOUND_CONNECTION_POOL_FIELD_NUMBER: _ClassVar[int]
    workload_selector: WorkloadSelector
    ingress: _containers.RepeatedCompositeFieldContainer[IstioIngressListener]
    egress: _containers.RepeatedCompositeFieldContainer[IstioEgressListener]
    outbound_traffic_policy: OutboundTrafficPolicy
    inbound_connection_pool: ConnectionPoolSettings
    def __init__(self, workload_selector: _Optional[_Union[WorkloadSelector, _Mapping]] = ..., ingress: _Optional[_Iterable[_Union[IstioIngressListener, _Mapping]]] = ..., egress: _Optional[_Iterable[_Union[IstioEgressListener, _Mapping]]] = ..., outbound_traffic_policy: _Optional[_Union[OutboundTrafficPolicy, _Mapping]] = ..., inbound_connection_pool: _Optional[_Union[ConnectionPoolSettings, _Mapping]] = ...) -> None: ...

class IstioIngressListener(_message.Message):
    __slots__ = ("port", "bind", "capture_mode", "default_endpoint", "tls", "connection_pool")
    PORT_FIELD_NUMBER: _ClassVar[int]
    BIND_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_MODE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_POOL_FIELD_NUMBER: _ClassVar[int]
    port: SidecarPort
    bind: str
    capture_mode: CaptureMode
    default_endpoint: str
    tls: ServerTLSSettings
    connection_pool: ConnectionPoolSettings
    def __init__(self, port: _Optional[_Union[SidecarPort, _Mapping]] = ..., bind: _Optional[str] = ..., capture_mode: _Optional[_Union[CaptureMode, str]] = ..., default_endpoint: _Optional[str] = ..., tls: _Optional[_Union[ServerTLSSettings, _Mapping]] = ..., connection_pool: _Optional[_Union[ConnectionPoolSettings, _Mapping]] = ...) -> None: ...

class IstioEgressListener(_message.Message):
    __slots__ = ("port", "bind", "capture_mode", "hosts")
    PORT_FIELD_NUMBER: _ClassVar[int]
    BIND_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_MODE_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    port: SidecarPort
    bind: str
    capture_mode: CaptureMode
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, port: _Optional[_Union[SidecarPort, _Mapping]] = ..., bind: _Optional[str] = ..., capture_mode: _Optional[_Union[CaptureMode, str]] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkloadSelector(_message.Message):
    __slots__ = ("labels",)
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class OutboundTrafficPolicy(_message.Message):
    __slots__ = ("mode", "egress_proxy")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REGISTRY_ONLY: _ClassVar[OutboundTrafficPolicy.Mode]
        ALLOW_ANY: _ClassVar[OutboundTrafficPolicy.Mode]
    REGISTRY_ONLY: OutboundTrafficPolicy.Mode
    ALLOW_ANY: OutboundTrafficPolicy.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    EGRESS_PROXY_FIELD_NUMBER: _ClassVar[int]
    mode: OutboundTrafficPolicy.Mode
    egress_proxy: Destination
    def __init__(self, mode: _Optional[_Union[OutboundTrafficPolicy.Mode, str]] = ..., egress_proxy: _Optional[_Union[Destination, _Mapping]] = ...) -> None: ...

class SidecarPort(_message.Message):
    __slots__ = ("number", "protocol", "name", "target_port")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_PORT_FIELD_NUMBER: _ClassVar[int]
    number: int
    protocol: str
    name: str
    target_port: int
    def __init__(self, number: _Optional[int] = ..., protocol: _Optional[str] = ..., name: _Optional[str] = ..., target_port: _Optional[int] = ...) -> None: ...

class ServiceEntry(_message.Message):
    __slots__ = ("hosts", "addresses", "ports", "location", "resolution", "endpoints", "export_to", "subject_alt_names", "workload_selector")
    class Location(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MESH_EXTERNAL: _ClassVar[ServiceEntry.Location]
        MESH_INTERNAL: _ClassVar[ServiceEntry.Location]
    MESH_EXTERNAL: ServiceEntry.Location
    MESH_INTERNAL: ServiceEntry.Location
    class Resolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NONE: _ClassVar[ServiceEntry.Resolution]
        STATIC: _ClassVar[ServiceEntry.Resolution]
        DNS: _ClassVar[ServiceEntry.Resolution]
        DNS_ROUND_ROBIN: _ClassVar[ServiceEntry.Resolution]
        DYNAMIC_DNS: _ClassVar[ServiceEntry.Resolution]
    NONE: ServiceEntry.Resolution
    STATIC: ServiceEntry.Resolution
    DNS: ServiceEntry.Resolution
    DNS_ROUND_ROBIN: ServiceEntry.Resolution
    DYNAMIC_DNS: ServiceEntry.Resolution
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    EXPORT_TO_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ALT_NAMES_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    ports: _containers.RepeatedCompositeFieldContainer[ServicePort]
    location: ServiceEntry.Location
    resolution: ServiceEntry.Resolution
    endpoints: _containers.RepeatedCompositeFieldContainer[WorkloadEntry]
    export_to: _containers.RepeatedScalarFieldContainer[str]
    subject_alt_names: _containers.RepeatedScalarFieldContainer[str]
    workload_selector: WorkloadSelector
    def __init__(self, hosts: _Optional[_Iterable[str]] = ..., addresses: _Optional[_Iterable[str]] = ..., ports: _Optional[_Iterable[_Union[ServicePort, _Mapping]]] = ..., location: _Optional[_Union[ServiceEntry.Location, str]] = ..., resolution: _Optional[_Union[ServiceEntry.Resolution, str]] = ..., endpoints: _Optional[_Iterable[_Union[WorkloadEntry, _Mapping]]] = ..., export_to: _Optional[_Iterable[str]] = ..., subject_alt_names: _Optional[_Iterable[str]] = ..., workload_selector: _Optional[_Union[WorkloadSelector, _Mapping]] = ...) -> None: ...

class ServicePort(_message.Message):
    __slots__ = ("number", "protocol", "name", "target_port")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_PORT_FIELD_NUMBER: _ClassVar[int]
    number: int
    protocol: str
    name: str
    target_port: int
    def __init__(self, number: _Optional[int] = ..., protocol: _Optional[str] = ..., name: _Optional[str] = ..., target_port: _Optional[int] = ...) -> None: ...

class WorkloadEntry(_message.Message):
    __slots__ = ("address", "ports", "labels", "network", "locality", "weight", "service_account")
    class PortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    address: str
    ports: _containers.ScalarMap[str, int]
    labels: _containers.ScalarMap[str, str]
    network: str
    locality: str
    weight: int
    service_account: str
    def __init__(self, address: _Optional[str] = ..., ports: _Optional[_Mapping[str, int]] = ..., labels: _Optional[_Mapping[str, str]] = ..., network: _Optional[str] = ..., locality: _Optional[str] = ..., weight: _Optional[int] = ..., service_account: _Optional[str] = ...) -> None: ...

class Destination(_message.Message):
    __slots__ = ("host", "subset", "port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    SUBSET_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    subset: str
    port: PortSelector
    def __init__(self, host: _Optional[str] = ..., subset: _Optional[str] = ..., port: _Optional[_Union[PortSelector, _Mapping]] = ...) -> None: ...

class PortSelector(_message.Message):
    __slots__ = ("number",)
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    number: int
    def __init__(self, number: _Optional[int] = ...) -> None: ...

class ConnectionPoolSettings(_message.Message):
    __slots__ = ("tcp", "http")
    class TCPSettings(_message.Message):
        __slots__ = ("max_connections", "connect_timeout", "tcp_keepalive", "max_connection_duration", "idle_timeout")
        class TcpKeepalive(_message.Message):
            __slots__ = ("probes", "time", "interval")
            PROBES_FIELD_NUMBER: _ClassVar[int]
            TIME_FIELD_NUMBER: _ClassVar[int]
            INTERVAL_FIELD_NUMBER: _ClassVar[int]
            probes: int
            time: _duration_pb2.Duration
            interval: _duration_pb2.Duration
            def __init__(self, probes: _Optional[int] = ..., time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
        MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
        CONNECT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        TCP_KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
        MAX_CONNECTION_DURATION_FIELD_NUMBER: _ClassVar[int]
        IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        max_connections: int
        connect_timeout: _duration_pb2.Duration
        tcp_keepalive: ConnectionPoolSettings.TCPSettings.TcpKeepalive
        max_connection_duration: _duration_pb2.Duration
        idle_timeout: _duration_pb2.Duration
        def __init__(self, max_connections: _Optional[int] = ..., connect_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., tcp_keepalive: _Optional[_Union[ConnectionPoolSettings.TCPSettings.TcpKeepalive, _Mapping]] = ..., max_connection_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    class HTTPSettings(_message.Message):
        __slots__ = ("http1_max_pending_requests", "http2_max_requests", "max_requests_per_connection", "max_retries", "idle_timeout", "h2_upgrade_policy", "use_client_protocol", "max_concurrent_streams")
        class H2UpgradePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            DEFAULT: _ClassVar[ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy]
            DO_NOT_UPGRADE: _ClassVar[ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy]
            UPGRADE: _ClassVar[ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy]
        DEFAULT: ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy
        DO_NOT_UPGRADE: ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy
        UPGRADE: ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy
        HTTP1_MAX_PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
        HTTP2_MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
        MAX_REQUESTS_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
        MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
        IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        H2_UPGRADE_POLICY_FIELD_NUMBER: _ClassVar[int]
        USE_CLIENT_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
        MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
        http1_max_pending_requests: int
        http2_max_requests: int
        max_requests_per_connection: int
        max_retries: int
        idle_timeout: _duration_pb2.Duration
        h2_upgrade_policy: ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy
        use_client_protocol: bool
        max_concurrent_streams: int
        def __init__(self, http1_max_pending_requests: _Optional[int] = ..., http2_max_requests: _Optional[int] = ..., max_requests_per_connection: _Optional[int] = ..., max_retries: _Optional[int] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., h2_upgrade_policy: _Optional[_Union[ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy, str]] = ..., use_client_protocol: _Optional[bool] = ..., max_concurrent_streams: _Optional[int] = ...) -> None: ...
    TCP_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    tcp: ConnectionPoolSettings.TCPSettings
    http: ConnectionPoolSettings.HTTPSettings
    def __init__(self, tcp: _Optional[_Union[ConnectionPoolSettings.TCPSettings, _Mapping]] = ..., http: _Optional[_Union[ConnectionPoolSettings.HTTPSettings, _Mapping]] = ...) -> None: ...

class ServerTLSSettings(_message.Message):
    __slots__ = ("https_redirect", "mode", "server_certificate", "private_key", "ca_certificates", "ca_crl", "credential_name", "credential_names", "subject_alt_names", "verify_certificate_spki", "verify_certificate_hash", "min_protocol_version", "max_protocol_version", "cipher_suites")
    class TLSmode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PASSTHROUGH: _ClassVar[ServerTLSSettings.TLSmode]
        SIMPLE: _ClassVar[ServerTLSSettings.TLSmode]
        MUTUAL: _ClassVar[ServerTLSSettings.TLSmode]
        AUTO_PASSTHROUGH: _ClassVar[ServerTLSSettings.TLSmode]
        ISTIO_MUTUAL: _ClassVar[ServerTLSSettings.TLSmode]
        OPTIONAL_MUTUAL: _ClassVar[ServerTLSSettings.TLSmode]
    PASSTHROUGH: ServerTLSSettings.TLSmode
    SIMPLE: ServerTLSSettings.TLSmode
    MUTUAL: ServerTLSSettings.TLSmode
    AUTO_PASSTHROUGH: ServerTLSSettings.TLSmode
    ISTIO_MUTUAL: ServerTLSSettings.TLSmode
    OPTIONAL_MUTUAL: ServerTLSSettings.TLSmode
    class TLSProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TLS_AUTO: _ClassVar[ServerTLSSettings.TLSProtocol]
        TLSV1_0: _ClassVar[ServerTLSSettings.TLSProtocol]
        TLSV1_1: _ClassVar[ServerTLSSettings.TLSProtocol]
        TLSV1_2: _ClassVar[ServerTLSSettings.TLSProtocol]
        TLSV1_3: _ClassVar[ServerTLSSettings.TLSProtocol]
    TLS_AUTO: ServerTLSSettings.TLSProtocol
    TLSV1_0: ServerTLSSettings.TLSProtocol
    TLSV1_1: ServerTLSSettings.TLSProtocol
    TLSV1_2: ServerTLSSettings.TLSProtocol
    TLSV1_3: ServerTLSSettings.TLSProtocol
    HTTPS_REDIRECT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SERVER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    CA_CRL_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_NAMES_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ALT_NAMES_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CERTIFICATE_SPKI_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CERTIFICATE_HASH_FIELD_NUMBER: _ClassVar[int]
    MIN_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHER_SUITES_FIELD_NUMBER: _ClassVar[int]
    https_redirect: bool
    mode: ServerTLSSettings.TLSmode
    server_certificate: str
    private_key: str
    ca_certificates: str
    ca_crl: str
    credential_name: str
    credential_names: _containers.RepeatedScalarFieldContainer[str]
    subject_alt_names: _containers.RepeatedScalarFieldContainer[str]
    verify_certificate_spki: _containers.RepeatedScalarFieldContainer[str]
    verify_certificate_hash: _containers.RepeatedScalarFieldContainer[str]
    min_protocol_version: ServerTLSSettings.TLSProtocol
    max_protocol_version: ServerTLSSettings.TLSProtocol
    cipher_suites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, https_redirect: _Optional[bool] = ..., mode: _Optional[_Union[ServerTLSSettings.TLSmode, str]] = ..., server_certificate: _Optional[str] = ..., private_key: _Optional[str] = ..., ca_certificates: _Optional[str] = ..., ca_crl: _Optional[str] = ..., credential_name: _Optional[str] = ..., credential_names: _Optional[_Iterable[str]] = ..., subject_alt_names: _Optional[_Iterable[str]] = ..., verify_certificate_spki: _Optional[_Iterable[str]] = ..., verify_certificate_hash: _Optional[_Iterable[str]] = ..., min_protocol_version: _Optional[_Union[ServerTLSSettings.TLSProtocol, str]] = ..., max_protocol_version: _Optional[_Union[ServerTLSSettings.TLSProtocol, str]] = ..., cipher_suites: _Optional[_Iterable[str]] = ...) -> None: ...
