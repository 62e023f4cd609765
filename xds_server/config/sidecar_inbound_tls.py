"""`inboundTls`: the February 2020 edition of the Sidecar API (istio/api e090ac3f8).

That edition terminated TLS on ingress listeners with `inboundTls`, per listener and at Sidecar
level (a default for listeners without their own). It was reverted a month later and came back
in 2022 as the ingress listener's `tls` (`ServerTLSSettings`). xds-server reads that edition with
its meaning: a listener's `inboundTls` is its `tls`; the Sidecar-level one is copied onto every
ingress listener that has neither, so translation only ever sees `tls`. `tls` and `inboundTls` on
one listener is a conflict, not a precedence question.

The Sidecar-level value is inherited only by HTTPS and TLS ports: TLS termination on a port of
another protocol is an error for a listener's own `tls`, and a namespace-wide default should not
reject the HTTP listeners next to it (the edition's own example pairs an HTTP 9080 listener with
a TLS 9443 one).
"""

from __future__ import annotations

from dataclasses import replace

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.istio import IstioSidecar
from xds_server.config.validate_fields import Report
from xds_server.config.validate_names import is_tls
from xds_server.config.validate_sidecar import ingress_tls

_RENAMED = "read as this listener's tls (later editions of the Sidecar API name the field tls)"


def validate_inbound_tls(spec: pb.Sidecar, report: Report) -> None:
    """Conflicts, the usual ingress TLS rules at the field the user wrote, and a notice per use."""
    level = spec.HasField("inbound_tls")
    for i, listener in enumerate(spec.ingress):
        path = f"spec.ingress[{i}]"
        if not listener.HasField("inbound_tls"):
            if level and not listener.HasField("tls") and listener.HasField("port"):
                protocol = listener.port.protocol
                if is_tls(protocol):
                    report.warn(f"{path}", "inherits the Sidecar-level spec.inboundTls as its tls")
                else:
                    report.warn(
                        f"{path}.port.protocol",
                        f"{protocol or 'unset'} is not HTTPS or TLS: the Sidecar-level spec.inboundTls "
                        "does not apply to this listener",
                    )
            continue
        if listener.HasField("tls"):
            report.error(
                f"{path}.inboundTls",
                "conflicts with tls on the same listener (inboundTls is the 2020 name of tls; set one)",
            )
            continue
        ingress_tls(listener.inbound_tls, listener.port.protocol, f"{path}.inboundTls", report)
        report.warn(f"{path}.inboundTls", _RENAMED)
    if level:
        if not spec.ingress:
            report.warn("spec.inboundTls", "has no effect without ingress listeners")
        ingress_tls(spec.inbound_tls, "HTTPS", "spec.inboundTls", report)


def with_inbound_tls_applied(sidecar: IstioSidecar) -> IstioSidecar:
    """The Sidecar with every `inboundTls` moved onto the listeners' `tls` (after validation)."""
    spec = sidecar.spec
    if not spec.HasField("inbound_tls") and not any(li.HasField("inbound_tls") for li in spec.ingress):
        return sidecar
    mapped = pb.Sidecar()
    mapped.CopyFrom(spec)
    for listener in mapped.ingress:
        if listener.HasField("inbound_tls"):
            if not listener.HasField("tls"):
                listener.tls.CopyFrom(listener.inbound_tls)
            listener.ClearField("inbound_tls")
        elif mapped.HasField("inbound_tls") and not listener.HasField("tls") and is_tls(listener.port.protocol):
            listener.tls.CopyFrom(mapped.inbound_tls)
    mapped.ClearField("inbound_tls")
    return replace(sidecar, spec=mapped)
