"""DestinationRule `tls` -> the outbound cluster's UpstreamTlsContext (istiod's
`pilot/pkg/networking/core/cluster_tls.go` buildUpstreamClusterTLSContext, constructUpstreamTLS,
setAutoSniAndAutoSanValidation).

istiod hands certificate files to its agent over SDS (`file-root:<path>`, `file-cert:<cert>~<key>`);
there is no agent here, so upstream Envoy reads the files itself (docs: Envoy
`CertificateValidationContext.trusted_ca`, `TlsCertificate` with filenames):

* DISABLE, or no `tls`: no transport socket (plaintext; there is no auto-mTLS to turn off).
* SIMPLE: `sni`; CA file as `validation_context.trusted_ca` (istiod's default CA `system`, which
  its agent resolves to the OS bundle, becomes `system_root_certs {}`, Envoy's own lookup of the
  platform store); `subjectAltNames` as `match_typed_subject_alt_names`, a DNS and a URI matcher
  per name (`match_subject_alt_names` is deprecated in Envoy); `caCrl` as `crl`;
  `insecureSkipVerify` as an empty validation context; h2 clusters advertise ALPN `h2`.
* MUTUAL: SIMPLE plus `tls_certificates` from `clientCertificate` / `privateKey`.
* A ServiceEntry host's own `subjectAltNames` are checked when the block names none.
* ISTIO_MUTUAL (needs Istio's CA and agent) and `credentialName` (an SDS secret): no context at
  all, the connection stays plaintext; validation warns (config/validate_destination_rule.py).
  Never a half-built context: a MUTUAL block without both files gets none either.

Without `sni`, istiod turns on HttpProtocolOptions `auto_sni` (and `auto_san_validation` when no
SANs are given and verification is on); Envoy applies both per HTTP request only, so traffic
through tcp_proxy sends no SNI and checks no SAN.
"""

from __future__ import annotations

from typing import NamedTuple, TypeGuard

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from xds_server._proto import istio_config_pb2 as pb

_TLS = pb.ClientTLSSettings
SYSTEM_CA = "system"  # istiod's default caCertificates: the platform's root certificates
ALPN_H2 = ("h2",)
_SAN = common_pb2.SubjectAltNameMatcher


class UpstreamTls(NamedTuple):
    """A cluster's TLS origination: its context and istiod's setAutoSniAndAutoSanValidation flags
    (HttpProtocolOptions `auto_sni`, `auto_san_validation`)."""

    context: tls_pb2.UpstreamTlsContext
    auto_sni: bool
    auto_san_validation: bool


def servable(tls: pb.ClientTLSSettings | None) -> TypeGuard[pb.ClientTLSSettings]:
    """Whether `tls` asks for a context this server can build from files alone."""
    if tls is None or tls.mode not in (_TLS.SIMPLE, _TLS.MUTUAL):
        return False
    if tls.credential_name:
        return False  # SDS secrets are not served (istiod drops these for selector-less DRs too)
    return tls.mode == _TLS.SIMPLE or bool(tls.client_certificate and tls.private_key)


def _file(path: str) -> base_pb2.DataSource:
    return base_pb2.DataSource(filename=path)


def _san_matchers(names: list[str]) -> list[common_pb2.SubjectAltNameMatcher]:
    out = []
    for name in names:
        exact = string_pb2.StringMatcher(exact=name)
        out.append(_SAN(san_type=_SAN.DNS, matcher=exact))
        out.append(_SAN(san_type=_SAN.URI, matcher=exact))
    return out


def upstream_tls(tls: pb.ClientTLSSettings | None, *, h2: bool,
                 default_sans: tuple[str, ...] = ()) -> UpstreamTls | None:
    """The UpstreamTlsContext for a resolved `tls` block and its auto SNI / SAN flags, or None
    (plaintext). `default_sans`: a ServiceEntry's subjectAltNames, checked when the block names
    none (istiod constructUpstreamTLS; auto_san_validation still follows the block's own SANs, as
    there)."""
    if not servable(tls):
        return None
    context = tls_pb2.UpstreamTlsContext(sni=tls.sni)
    common = context.common_tls_context
    common.tls_params.CopyFrom(common_pb2.TlsParameters(
        tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
        tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
    ))
    if tls.mode == _TLS.MUTUAL:
        common.tls_certificates.add(certificate_chain=_file(tls.client_certificate),
                                    private_key=_file(tls.private_key))
    validation = common.validation_context
    validation.SetInParent()
    skip_verify = tls.HasField("insecure_skip_verify") and tls.insecure_skip_verify
    if not skip_verify:
        ca = tls.ca_certificates or SYSTEM_CA
        if ca == SYSTEM_CA:
            validation.system_root_certs.SetInParent()
        else:
            validation.trusted_ca.CopyFrom(_file(ca))
        validation.match_typed_subject_alt_names.extend(
            _san_matchers(list(tls.subject_alt_names) or list(default_sans)))
        if tls.ca_crl:
            validation.crl.CopyFrom(_file(tls.ca_crl))
    if h2:
        common.alpn_protocols.extend(ALPN_H2)
    auto_sni = not tls.sni
    return UpstreamTls(context, auto_sni, auto_sni and not tls.subject_alt_names and not skip_verify)
