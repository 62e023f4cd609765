"""The inbound side of a sidecar: inbound clusters, virtualInbound and Sidecar ingress listeners.

`build_inbound` is pure and the only entry point. Which ports get inbound config (istiod's
`listener_inbound.go` buildInboundChainConfigs, `cluster.go` buildInboundClusters):

* Sidecar without `ingress` (or no Sidecar): one chain and one cluster per target port of the
  workload's service targets; nothing at all when INTERCEPTION_MODE is NONE.
* Sidecar with `ingress`: only its entries (service ports are ignored). Each entry gets a cluster
  shaped by `defaultEndpoint`; its chains go into virtualInbound, or into a listener of its own
  when it binds its port (captureMode NONE, or DEFAULT on a NONE-mode proxy). An IPTABLES entry
  on a NONE-mode proxy has nowhere to live: no listener, but the cluster is still built.

Connection pool of an inbound cluster (istiod's `cluster_builder.go` buildInboundCluster): the
Sidecar's (ingress entry for the port, else `inboundConnectionPool`), which replaces the whole
block; else the `connectionPool` of the DestinationRule of the service served on that port
(its port-level entry for the service port first; selector rules never apply inbound).

Every Built is memoised on the exact inputs it depends on, so pods serving the same ports share
their clusters and (for identical chain sets) their virtualInbound.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from xds_server.config import IstioSidecar, protocol
from xds_server.config.address import Endpoint, EndpointKind
from xds_server.config.istio import CaptureMode, SidecarIngress
from xds_server.config.traffic import ConnectionPool, ServerTls
from xds_server.memo import Memo
from xds_server.mesh import names
from xds_server.mesh.destination_rules import (
    DestinationRuleIndex,
    MergedDestinationRule,
    lookup_steps,
    traffic_policy_for,
)
from xds_server.mesh.proxy import Proxy
from xds_server.mesh.workload import Workload
from xds_server.resources import Built
from xds_server.store.view import StoreView
from xds_server.translate import cluster_policy, envoy
from xds_server.translate.dependencies import rule_sources
from xds_server.translate.inbound_clusters import LOOPBACKS, InboundClusterSpec, build_inbound_cluster
from xds_server.translate.inbound_listeners import (
    ChainConfig,
    after_tls_termination,
    build_bound_listener,
    build_virtual_inbound,
)
from xds_server.translate.inbound_targets import DEFAULT_DOMAIN_SUFFIX, ServiceTarget, service_targets

NONE_MODE = "NONE"
TPROXY_MODE = "TPROXY"
LOCALHOST_POLICY = "LOCALHOST"


@dataclass(frozen=True, slots=True)
class InboundParts:
    clusters: list[Built]
    listeners: list[Built]
    # "namespace/name" of every DestinationRule the pools' lookups consulted (their change, or
    # their leaving the host, can change these clusters: push/dependencies.py `own_reads`).
    destination_rules: frozenset[str] = frozenset()


def build_inbound(view: StoreView, workload: Workload, sidecar: IstioSidecar | None, memo: Memo, *,
                  domain_suffix: str = DEFAULT_DOMAIN_SUFFIX,
                  destination_rules: DestinationRuleIndex | None = None) -> InboundParts:
    proxy = workload.proxy
    targets = service_targets(view, workload, domain_suffix)
    ctx = _Context(view, workload, sidecar, targets, destination_rules)
    if sidecar is not None and sidecar.ingress:
        configs = _ingress_chain_configs(ctx, sidecar.ingress, f"{sidecar.meta.name}.{workload.namespace}")
        specs = _ingress_cluster_specs(ctx, sidecar.ingress)
    elif proxy.interception_mode == NONE_MODE:
        # No capture and no ingress: nothing can reach a chain, and binding the service ports
        # would take them from the application.
        return InboundParts([], [])
    else:
        configs = _service_chain_configs(ctx)
        specs = _service_cluster_specs(ctx)

    clusters = [memo.get(("inbound_cluster", s), build_inbound_cluster, s) for s in specs]
    timeout = view.mesh.protocol_detection_timeout_s
    listeners: list[Built] = []
    if proxy.interception_mode != NONE_MODE:
        virtual = tuple(c for c in configs if not c.bind_to_port)
        tproxy = proxy.interception_mode == TPROXY_MODE
        key = ("virtual_inbound", virtual, ctx.wildcard, tproxy, timeout)
        listeners.append(memo.get(key, build_virtual_inbound, virtual, ctx.wildcard, tproxy, timeout))
    listeners += [memo.get(("inbound_listener", c, timeout), build_bound_listener, c, timeout)
                  for c in configs if c.bind_to_port]
    return InboundParts(clusters, listeners, frozenset(ctx.consulted))


# ------------------------------------------------------------------ addressing
class _Context:
    """Per-call facts several builders need: IP family picks, reserved ports, mesh settings."""

    def __init__(self, view: StoreView, workload: Workload, sidecar: IstioSidecar | None,
                 targets: tuple[ServiceTarget, ...], destination_rules: DestinationRuleIndex | None = None) -> None:
        self.proxy: Proxy = workload.proxy
        self.sidecar = sidecar
        self.destination_rules = destination_rules
        self.consulted: set[str] = set()  # DestinationRules the lookups looked at
        self.targets = targets
        self.ips: Sequence[str] = workload.ips
        self.v4 = [ip for ip in self.ips if not envoy.is_ipv6(ip)]
        self.v6 = [ip for ip in self.ips if envoy.is_ipv6(ip)]
        self.wildcard = envoy.wildcard_for(self.ips)  # istiod's wildCards[ipMode][0]
        self.localhost = envoy.localhost_for(self.ips)  # actualLocalHosts[0]
        # Proxy IP mode: IPv4 unless every address is IPv6; dual when both are present.
        self.has_v4_loopback = bool(self.v4) or not self.v6
        self.has_v6_loopback = bool(self.v6)
        self.passthrough_bind = (envoy.INBOUND_PASSTHROUGH_BIND_V6 if self.v6 and not self.v4
                                 else envoy.INBOUND_PASSTHROUGH_BIND_V4)
        self.static_ports = _static_ports(self.proxy)
        self.mesh = view.mesh

    def rule_pool(self, owner: ServiceTarget | None) -> tuple[ConnectionPool | None, str]:
        """The DestinationRule pool for the service served on a port, and the rule's `istio.config`."""
        if self.destination_rules is None or owner is None:
            return None, ""
        # One walk gives both the rules consulted and the rules found: the walk ends at the first
        # step that sees a rule, so what its last step sees is the answer (none if it saw none).
        found: tuple[MergedDestinationRule, ...] = ()
        for rules, seen in lookup_steps(self.destination_rules, self.proxy.namespace, owner.hostname, owner.namespace):
            self.consulted.update(rule_sources(rules))
            found = seen
        rule = next((r for r in found if r.selector is None), None)
        if rule is None or not rule.spec.HasField("traffic_policy"):
            return None, ""
        policy = traffic_policy_for(rule, owner.port)
        pool = ConnectionPool.of(policy.connection_pool) if policy is not None and policy.HasField(
            "connection_pool") else None
        return pool, cluster_policy.rule_config_path(rule.sources[0])

    def cluster_spec(self, port: int, proto: protocol.Protocol, endpoint: str, endpoint_port: int,
                     services: tuple[tuple[str, str, str], ...], owner: ServiceTarget | None = None,
                     ) -> InboundClusterSpec:
        # Loopback upstreams are never captured by iptables; everything else must come from
        # 127.0.0.6 (::6) so that the pod's own rules let it through (istio-iptables returns
        # traffic from that source without redirecting it).
        bind = "" if endpoint in LOOPBACKS else self.passthrough_bind
        pool, rule_config = self.rule_pool(owner)
        if self.sidecar is not None and (own := self.sidecar.connection_pool_for_port(port)) is not None:
            pool = own  # the Sidecar's pool replaces the rule's whole block
        return InboundClusterSpec(port=port, protocol=proto, endpoint=endpoint, endpoint_port=endpoint_port,
                                  upstream_bind=bind, pool=pool,
                                  connect_timeout_s=self.mesh.connect_timeout_s, services=services,
                                  rule_config=rule_config)


def _static_ports(proxy: Proxy) -> frozenset[int]:
    """The agent's bootstrap listeners (ENVOY_STATUS_PORT / ENVOY_PROMETHEUS_PORT, else defaults)."""
    out = set()
    for key, default in (("ENVOY_STATUS_PORT", names.STATUS_PORT), ("ENVOY_PROMETHEUS_PORT", names.PROMETHEUS_PORT)):
        raw = str(proxy.metadata.get(key, "")).strip()
        out.add(int(raw) if raw.isdigit() else default)
    return frozenset(out)


def global_unicast_ip(ips: Sequence[str]) -> str:
    """First address Go's IsGlobalUnicast accepts (private ranges count; loopback/link-local don't)."""
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified:
            continue
        if addr == ipaddress.IPv4Address("255.255.255.255"):
            continue
        return str(addr)
    return ""


# ------------------------------------------------------------------ service-derived
def _service_chain_configs(ctx: _Context) -> list[ChainConfig]:
    """One chain config per target port; the oldest service owns a port and its protocol."""
    reserved = ctx.static_ports | {names.VIRTUAL_OUTBOUND_PORT, names.VIRTUAL_INBOUND_PORT}
    by_port: dict[int, ChainConfig] = {}
    for t in ctx.targets:
        if t.target_port in reserved or t.target_port in by_port:
            continue
        by_port[t.target_port] = ChainConfig(bind=ctx.wildcard, port=t.target_port, service_port=t.port,
                                             protocol=t.protocol, hostname=t.hostname)
    return [by_port[p] for p in sorted(by_port)]


def _service_cluster_specs(ctx: _Context) -> list[InboundClusterSpec]:
    """`buildInboundClustersFromServiceInstances`: one cluster per target port (reserved ones too)."""
    groups: dict[int, list[ServiceTarget]] = {}
    for t in ctx.targets:
        groups.setdefault(t.target_port, []).append(t)
    localhost = ctx.mesh.inbound_traffic_policy == LOCALHOST_POLICY
    out = []
    for port in sorted(groups):
        group = groups[port]
        first = group[0]
        # Telemetry metadata lists every service on this port that shares the first one's port.
        services = tuple(dict.fromkeys((t.hostname, t.name, t.namespace) for t in group if t.port == first.port))
        endpoint = ctx.localhost if localhost else ""
        out.append(ctx.cluster_spec(port, first.protocol, endpoint, port, services, first))
    return out


# ------------------------------------------------------------------ Sidecar ingress
def _bind_to_port(mode: CaptureMode, proxy: Proxy) -> bool:
    """`getBindToPort`: DEFAULT follows the proxy (binds only without capture); else explicit."""
    if mode == CaptureMode.DEFAULT:
        return proxy.interception_mode == NONE_MODE
    return mode == CaptureMode.NONE


def _servable_tls(entry: SidecarIngress) -> ServerTls | None:
    return entry.tls if entry.tls is not None and entry.tls.servable else None


def _ingress_chain_configs(ctx: _Context, ingress: Sequence[SidecarIngress], synthetic_host: str) -> list[ChainConfig]:
    default_bind = global_unicast_ip(ctx.ips) or ctx.wildcard
    by_port: dict[int, ChainConfig] = {}
    for entry in ingress:
        port = entry.port.number
        if not port or port in by_port:  # first entry wins a port
            continue
        raw = entry.port.protocol
        bind_to_port = _bind_to_port(entry.capture_mode, ctx.proxy)
        if bind_to_port and ctx.proxy.unprivileged and 0 < port < 1024:
            continue
        if _conflicts_with_static_listener(ctx, entry.bind, port, raw):
            continue
        tls = _servable_tls(entry)
        by_port[port] = ChainConfig(
            bind=entry.bind or default_bind, port=port, service_port=port,
            protocol=after_tls_termination(raw) if tls is not None else raw,
            hostname=synthetic_host, bind_to_port=bind_to_port, tls=tls,
        )
    return [by_port[p] for p in sorted(by_port)]


def _conflicts_with_static_listener(ctx: _Context, bind: str, port: int, proto: protocol.Protocol) -> bool:
    """`conflictWithReservedListener` as ingress calls it: only when the listener would be the
    wildcard (an explicit wildcard bind, or no bind on an HTTP port), and only static ports."""
    if bind:
        if bind != ctx.wildcard:
            return False
    elif not protocol.is_http(proto):
        return False
    return port in ctx.static_ports


def _ingress_cluster_specs(ctx: _Context, ingress: Sequence[SidecarIngress]) -> list[InboundClusterSpec]:
    """`buildInboundClustersFromSidecar`: every entry, even one that got no listener."""
    out: dict[str, InboundClusterSpec] = {}
    for entry in ingress:
        port = entry.port.number
        if not port:
            continue
        target = _default_endpoint(ctx, entry.default_endpoint)
        if target is None:
            continue  # istiod skips an endpoint it cannot parse (validation rejects it anyway)
        endpoint, endpoint_port = target
        raw = entry.port.protocol
        proto = after_tls_termination(raw) if _servable_tls(entry) is not None else raw
        owner = next((t for t in ctx.targets if t.target_port == port), None)
        services = ((owner.hostname, owner.name, owner.namespace),) if owner is not None else ()
        spec = ctx.cluster_spec(port, proto, endpoint, endpoint_port, services, owner)
        out.setdefault(spec.name, spec)
    return list(out.values())


def _default_endpoint(ctx: _Context, endpoint: Endpoint) -> tuple[str, int] | None:
    """(endpoint, port) for the cluster; ("", 0) is ORIGINAL_DST; None means no cluster.

    istiod's `buildInboundClustersFromSidecar` (pilot/pkg/networking/core/cluster.go): a wildcard
    host means the instance IP of that family, a loopback host the loopback the proxy has.
    """
    if endpoint.kind is EndpointKind.UNIX:
        return endpoint.address, 0
    if endpoint.kind is EndpointKind.ORIGINAL_DST:
        return "", 0
    if endpoint.kind is EndpointKind.INVALID:
        return None
    host, port = endpoint.host, endpoint.port
    if host == "0.0.0.0":
        return (ctx.v4[0] if ctx.v4 else "127.0.0.1"), port
    if host == "::":
        return (ctx.v6[0] if ctx.v6 else "::1"), port
    if host == "127.0.0.1":
        return ("127.0.0.1" if ctx.has_v4_loopback else "::1"), port
    if host == "::1":
        return ("::1" if ctx.has_v6_loopback else "127.0.0.1"), port
    # Empty (":8080") or an arbitrary host: istiod falls back to ORIGINAL_DST and drops the port.
    return "", port
