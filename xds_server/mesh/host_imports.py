"""Sidecar egress `hosts` entries (`ns/host`, `*/host`, `./host`, `~ns/host`) parsed once, and the
host matching istiod applies to them (pilot/pkg/model/sidecar.go, pkg/config/host/name.go).

Its own module because both the Sidecar scope (scope.py) and VirtualService selection
(virtual_services.py) read imports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from xds_server.mesh.services import ServiceModel

WILDCARD_NAMESPACE = "*"
CURRENT_NAMESPACE = "."


def host_matches(service_host: str, imported: str) -> bool:
    """istio host.Name.SubsetOf: is every name the service answers covered by the import?"""
    if service_host.startswith("*"):
        return imported.startswith("*") and service_host[1:].endswith(imported[1:])
    if imported.startswith("*"):
        return service_host.endswith(imported[1:])
    return service_host == imported


@dataclass(frozen=True, slots=True)
class HostImports:
    """Parsed `hosts`: imports and exclusions by namespace ("*" = any namespace)."""

    imports: Mapping[str, tuple[str, ...]]
    exclusions: Mapping[str, tuple[str, ...]]

    @classmethod
    def parse(cls, hosts: Iterable[str], config_namespace: str) -> HostImports:
        imports: dict[str, list[str]] = {}
        exclusions: dict[str, list[str]] = {}
        for entry in hosts:
            ns, sep, host = entry.partition("/")
            if not sep or not host:
                continue  # istiod logs and ignores entries that are not namespace/dnsName
            target = imports
            if ns.startswith("~"):
                target, ns = exclusions, ns[1:] or WILDCARD_NAMESPACE
            if ns == CURRENT_NAMESPACE:
                ns = config_namespace
            target.setdefault(ns, []).append(host)
        return cls({k: tuple(v) for k, v in imports.items()}, {k: tuple(v) for k, v in exclusions.items()})

    def namespaces(self) -> frozenset[str] | None:
        """Namespaces whose services can match; None when a `*/` entry means all of them."""
        if WILDCARD_NAMESPACE in self.imports:
            return None
        return frozenset(self.imports)

    def selects(self, svc: ServiceModel) -> bool:
        for ns in (svc.namespace, WILDCARD_NAMESPACE):
            if any(host_matches(svc.hostname, h) for h in self.exclusions.get(ns, ())):
                return False
        own = self.imports.get(svc.namespace)
        if own is not None:
            return any(host_matches(svc.hostname, h) for h in own)
        return any(host_matches(svc.hostname, h) for h in self.imports.get(WILDCARD_NAMESPACE, ()))
