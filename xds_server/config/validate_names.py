"""Syntax rules for the strings inside manifests: DNS names, IPs, ports, protocols, labels.

Each `*_error` function returns None when the value is fine, else a short message without the
field path (the caller prefixes it). The rules follow istio/istio `pkg/config/validation`
(`agent.ValidateWildcardDomain`, `ValidateFQDN`, `labels.IsDNS1123Label`, `protocol.Parse`) and
Kubernetes apimachinery, so that what istiod or the API server would reject is rejected here.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

# Istio's DNS-1123 label allows upper case (pkg/config/labels); Kubernetes object names do not.
_ISTIO_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?")
_WILDCARD_LABEL = re.compile(r"\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?")
_K8S_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_K8S_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_IANA_SVC_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")

# pkg/config/protocol.Parse, by lower-case name. Anything else is "unsupported": Istio treats an
# empty protocol as auto-detect but rejects an explicit unknown one.
PROTOCOLS = {
    "tcp": "TCP",
    "udp": "UDP",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "http": "HTTP",
    "http_proxy": "HTTP_PROXY",
    "http2": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "mongo": "Mongo",
    "redis": "Redis",
    "mysql": "MySQL",
}
_HTTP = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web"})
_TCP = frozenset({"TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL"})
_TLS = frozenset({"HTTPS", "TLS"})


def protocol_of(name: str) -> str:
    """Istio's canonical protocol name, or "" when unknown or empty."""
    return PROTOCOLS.get(name.lower(), "")


def is_http(name: str) -> bool:
    return protocol_of(name) in _HTTP


def is_tcp(name: str) -> bool:
    return protocol_of(name) in _TCP


def is_tls(name: str) -> bool:
    return protocol_of(name) in _TLS


def protocol_error(name: str) -> str | None:
    if name and not protocol_of(name):
        return f"unsupported protocol {name!r} (one of {', '.join(sorted(PROTOCOLS.values()))})"
    return None


def port_error(number: int) -> str | None:
    if 1 <= number <= 65535:
        return None
    return f"port number {number} must be in the range 1..65535"


def is_dns1123_label(value: str) -> bool:
    """Istio's label rule (upper case allowed), used for port names and host labels."""
    return len(value) <= 63 and _ISTIO_LABEL.fullmatch(value) is not None


def port_name_error(name: str) -> str | None:
    if is_dns1123_label(name):
        return None
    return f"invalid port name {name!r} (must be a DNS-1123 label)" if name else "port name is required"


def _dns_preconditions(name: str) -> str | None:
    if not name:
        return "empty domain name not allowed"
    if len(name) > 255:
        return f"domain name {name!r} too long (max 255)"
    return None


def _dns_labels_error(domain: str, whole: str) -> str | None:
    parts = domain.split(".")
    if parts[-1].isdigit():
        return f"domain name {whole!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # trailing dot: `istio.io.`
        if not is_dns1123_label(label):
            return f"domain name {whole!r} invalid (label {label!r} invalid)"
    return None


def fqdn_error(name: str) -> str | None:
    return _dns_preconditions(name) or _dns_labels_error(name, name)


def wildcard_domain_error(name: str) -> str | None:
    """An FQDN, optionally with a wildcard in the left-most label only (`*.example.com`)."""
    if err := _dns_preconditions(name):
        return err
    first, dot, rest = name.partition(".")
    if len(first) > 63 or _WILDCARD_LABEL.fullmatch(first) is None:
        return f"domain name {name!r} invalid (label {first!r} invalid)"
    return _dns_labels_error(rest, name) if dot else None


def partial_wildcard_error(name: str) -> str | None:
    if "*" in name and name != "*" and not name.startswith("*."):
        return f"partial wildcard {name!r} not allowed"
    return None


def ip_error(addr: str) -> str | None:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return f"{addr!r} is not a valid IP address"
    return None


def is_ip(addr: str) -> bool:
    return ip_error(addr) is None


def ip_subnet_error(value: str) -> str | None:
    """An IP address or a CIDR block (a.b.c.d/nn, 2001:db8::/32)."""
    if value.count("/") == 1:
        addr, _, bits = value.partition("/")
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not a valid CIDR block"
        if not bits.isdigit() or ip_error(addr):
            return f"{value!r} is not a valid CIDR block"
        return None
    return ip_error(value)


def unix_address_error(path: str) -> str | None:
    """The part after `unix://`: an absolute file path, or `@name` (abstract namespace)."""
    if not path:
        return "unix address must not be empty"
    if path.startswith("@"):
        return None
    if not posixpath.isabs(path) or path.endswith("/"):
        return f"{path!r} is not an absolute path to a file"
    return None


def k8s_name_error(name: str) -> str | None:
    """metadata.name of most Kubernetes kinds: a DNS-1123 subdomain."""
    if len(name) > 253 or _K8S_SUBDOMAIN.fullmatch(name) is None:
        return f"invalid name {name!r} (must be a lower-case DNS-1123 subdomain)"
    return None


def k8s_label_error(name: str) -> str | None:
    """metadata.namespace and Namespace names: a DNS-1123 label."""
    if len(name) > 63 or _K8S_LABEL.fullmatch(name) is None:
        return f"invalid name {name!r} (must be a lower-case DNS-1123 label)"
    return None


def label_key_error(key: str) -> str | None:
    """A Kubernetes label key: optional DNS prefix and `/`, then a qualified name."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or _K8S_SUBDOMAIN.fullmatch(prefix) is None):
        return f"invalid label key {key!r}"
    if len(name) > 63 or _QUALIFIED_NAME.fullmatch(name) is None:
        return f"invalid label key {key!r}"
    return None


def label_value_error(value: str) -> str | None:
    if value == "" or (len(value) <= 63 and _QUALIFIED_NAME.fullmatch(value)):
        return None
    return f"invalid label value {value!r}"


def iana_svc_name_error(name: str) -> str | None:
    """A named container/target port: at most 15 chars, lower case, at least one letter."""
    if (
        len(name) > 15
        or _IANA_SVC_NAME.fullmatch(name) is None
        or "--" in name
        or not any(c.isalpha() for c in name)
    ):
        return f"invalid port name {name!r} (must be an IANA service name)"
    return None
