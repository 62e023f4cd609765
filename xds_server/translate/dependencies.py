"""What one proxy's generated config read from the store, as `generate` reports it.

The push stage indexes these (push/dependencies.py) and decides, with one rule per config kind,
which proxies a change can reach: istiod keeps the same facts on the proxy's SidecarScope
(configDependencies, pilot/pkg/model/sidecar.go) and asks SidecarScope.DependsOnConfig. Every
proxy also reads the MeshConfig, so that is not recorded here: a MeshConfig change reaches all.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_server.config import ObjectRef


@dataclass(frozen=True, slots=True)
class ScopeDependencies:
    """What the outbound half read: the same for every proxy of one Scope, and shared by them."""

    # Namespaces of the imported services: their Pods are the endpoints (EDS, DNS clusters,
    # headless listeners).
    imports: frozenset[str]
    # Namespaces whose Services and ServiceEntries the egress hosts can import at all (None: any
    # namespace, a `*/` host): a service appearing or changing there can change the scope.
    watched: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Dependencies:
    """What one proxy's snapshot read: its own side (workload, Sidecar choice, inbound) and its scope."""

    # Its own namespace: the Services and ServiceEntries there select its inbound ports, the
    # Sidecars there (and in the root namespace) decide which Sidecar applies.
    namespace: str
    # Its own Pod, found by name; None when found by IP or not at all, so any Pod can become it.
    pod: ObjectRef | None
    outbound: ScopeDependencies
