"""Helpers for the DestinationRule cluster tests: a DR manifest and decoders for what CDS carries."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

from tests.unit.translate.outbound_support import destination_rule
from xds_server.translate.envoy import HTTP_PROTOCOL_OPTIONS

REVIEWS = "reviews.default.svc.cluster.local"


def dr(spec: str, *, name: str = "reviews", ns: str = "default", created: int = 0,
       api: str = "networking.istio.io/v1") -> str:
    return destination_rule(spec, name=name, ns=ns, created=created, api=api)


def http_options(c: cluster_pb2.Cluster) -> hpo_pb2.HttpProtocolOptions | None:
    if HTTP_PROTOCOL_OPTIONS not in c.typed_extension_protocol_options:
        return None
    out = hpo_pb2.HttpProtocolOptions()
    c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(out)
    return out


def tls_context(c: cluster_pb2.Cluster) -> tls_pb2.UpstreamTlsContext | None:
    if not c.HasField("transport_socket"):
        return None
    assert c.transport_socket.name == "envoy.transport_sockets.tls"
    out = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(out)
    return out


def istio_md(c: cluster_pb2.Cluster) -> dict[str, object]:
    from google.protobuf import json_format
    return json_format.MessageToDict(c.metadata.filter_metadata["istio"])
