"""Who is at the other end of an xDS stream, and may it claim the node it names (mTLS).

gRPC has already verified the client certificate against `--client-ca` in the handshake; this
module reads the certificate's identities from the call's auth context and checks them against
what the node claims (istiod `pilot/pkg/xds/auth.go`):

- a SPIFFE URI SAN `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`;
- a DNS SAN `<service-account>.<namespace>.svc[.<suffix>]` (the Kubernetes form of a name in a
  namespace; the first label is the service account).

An identity matches when its namespace is the proxy's namespace and, when a service account is
expected (the Pod's, else the node's SERVICE_ACCOUNT metadata), its service account too. Any
trust domain is accepted: the client CA is the trust anchor. Which service account is expected
needs the store, so the App injects it (xds_server/authz.py); this layer only parses and matches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xds_server.xds.proxy import P

SPIFFE_PREFIX = "spiffe://"


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """One identity of the peer's certificate, as presented and as parsed."""

    san: str  # e.g. spiffe://cluster.local/ns/default/sa/web or web.default.svc
    namespace: str
    service_account: str


# authorize(identities, proxy) -> None when allowed, else why not (the PERMISSION_DENIED detail)
Authorize = Callable[[Sequence[PeerIdentity], P], str | None]


def parse_spiffe(uri: str) -> PeerIdentity | None:
    """spiffe://<trust-domain>/ns/<ns>/sa/<sa>, else None."""
    if not uri.startswith(SPIFFE_PREFIX):
        return None
    trust_domain, _, path = uri[len(SPIFFE_PREFIX):].partition("/")
    parts = path.split("/")
    if not trust_domain or len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa" or not parts[1] or not parts[3]:
        return None
    return PeerIdentity(uri, parts[1], parts[3])


def parse_dns(name: str) -> PeerIdentity | None:
    """<sa>.<ns>.svc[.<suffix>], else None (wildcards are never an identity)."""
    labels = name.rstrip(".").split(".")
    if len(labels) < 3 or labels[2] != "svc" or not labels[0] or not labels[1] or "*" in name:
        return None
    return PeerIdentity(name, labels[1], labels[0])


def _values(auth_context: dict[str, Any], key: str) -> list[str]:
    out = []
    for value in auth_context.get(key, ()):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        out.append(text)
    return out


def peer_identities(context: Any) -> tuple[list[PeerIdentity], list[str]] | None:
    """(parsed identities, every SAN as presented) of the peer's verified certificate.

    None when the call carries no client certificate (plaintext, or TLS without --client-ca).
    """
    try:
        auth = context.auth_context() or {}
    except Exception:  # a context without transport security details
        return None
    if not auth.get("x509_pem_cert") and not auth.get("x509_subject_alternative_name"):
        return None
    uris = _values(auth, "peer_uri")
    dns = _values(auth, "peer_dns")
    parsed = [p for p in map(parse_spiffe, uris) if p is not None]
    parsed += [p for p in map(parse_dns, dns) if p is not None]
    return parsed, [*uris, *dns]


def match(identities: Sequence[PeerIdentity], namespace: str, service_account: str = "") -> str | None:
    """None when one identity may claim namespace (and service_account, if given), else why not."""
    for ident in identities:
        if ident.namespace != namespace:
            continue
        if service_account and ident.service_account != service_account:
            continue
        return None
    wanted = f"namespace {namespace!r}" + (f" service account {service_account!r}" if service_account else "")
    shown = ", ".join(i.san for i in identities[:4]) or "none"
    return f"no certificate identity ({shown}) matches {wanted}"


def csds_scope(control_namespace: str) -> Callable[[Any], Callable[[Any], bool] | None]:
    """Over mTLS, which proxies a CSDS caller may see: those of its identities' namespaces, or
    every proxy when one identity is in the control plane's namespace (the mesh root namespace,
    istio-system by default; istiod likewise keeps its debug views to that namespace)."""

    def scope(context: Any) -> Callable[[Any], bool] | None:
        peer = peer_identities(context)
        if peer is None:
            return lambda conn: False  # no verified identity: nothing (the port requires one anyway)
        namespaces = {i.namespace for i in peer[0]}
        if control_namespace in namespaces:
            return None
        return lambda conn: getattr(conn.proxy, "namespace", None) in namespaces

    return scope
