"""Sidecar ingress `tls` -> DownstreamTlsContext (istiod's `listener.go` BuildListenerTLSContext).

Project decision: ingress TLS works from the Sidecar alone (istiod also wants
ENABLE_TLS_ON_SIDECAR_INGRESS and a PeerAuthentication DISABLE for the port), and certificates are
files Envoy reads itself: there is no agent SDS here, so instead of istiod's `file-cert:`/`file-root:`
SDS secrets the context names the files inline. Private keys are only ever referenced by path.

Only SIMPLE and MUTUAL are served (the API's own limit for sidecars). An entry this module cannot
serve (other modes, credentialName, missing files, MUTUAL without a CA) is left in plaintext, as
istiod does whenever it ignores ingress TLS, rather than emitting a listener Envoy would reject.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.traffic import ServerTls

# What istiod offers on a terminated sidecar/gateway port (util.ALPNHttp).
HTTP_ALPNS = ("h2", "http/1.1")

_TLS_VERSIONS = {
    pb.ServerTLSSettings.TLS_AUTO: common_pb2.TlsParameters.TLS_AUTO,
    pb.ServerTLSSettings.TLSV1_0: common_pb2.TlsParameters.TLSv1_0,
    pb.ServerTLSSettings.TLSV1_1: common_pb2.TlsParameters.TLSv1_1,
    pb.ServerTLSSettings.TLSV1_2: common_pb2.TlsParameters.TLSv1_2,
    pb.ServerTLSSettings.TLSV1_3: common_pb2.TlsParameters.TLSv1_3,
}


def downstream_tls_context(tls: ServerTls, *, http: bool) -> tls_pb2.DownstreamTlsContext:
    """The context for servable settings (`ServerTls.servable`); `http` (HTTPS terminated to HCM)
    adds ALPN h2,http/1.1."""
    mutual = tls.mutual
    common = tls_pb2.CommonTlsContext(
        alpn_protocols=list(HTTP_ALPNS) if http else [],
        tls_certificates=[common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename=tls.server_certificate),
            private_key=base_pb2.DataSource(filename=tls.private_key),
        )],
    )
    if mutual:
        validation = common.validation_context
        validation.trusted_ca.filename = tls.ca_certificates
        if tls.ca_crl:
            validation.crl.filename = tls.ca_crl
        validation.verify_certificate_spki.extend(tls.verify_certificate_spki)
        validation.verify_certificate_hash.extend(tls.verify_certificate_hash)
    if tls.min_protocol_version != pb.ServerTLSSettings.TLS_AUTO:
        common.tls_params.tls_minimum_protocol_version = _TLS_VERSIONS[tls.min_protocol_version]
    if tls.max_protocol_version != pb.ServerTLSSettings.TLS_AUTO:
        common.tls_params.tls_maximum_protocol_version = _TLS_VERSIONS[tls.max_protocol_version]
    if tls.cipher_suites:
        # istiod's FilterCipherSuites drops duplicates (and names Envoy does not know).
        common.tls_params.cipher_suites.extend(dict.fromkeys(tls.cipher_suites))
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    ctx.require_client_certificate.value = mutual
    return ctx
