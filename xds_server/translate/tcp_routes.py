"""VirtualService `tcp` and `tls` routes as the network filter chains of one outbound service port,
and the DestinationRule fields of their tcp_proxy.

istiod builds these while building each imported service's outbound listener (istio/istio
pilot/pkg/networking/core/listener.go `buildSidecarOutboundTCPListenerOpts`, tls.go
`buildSidecarOutboundTLSFilterChainOpts` / `buildSidecarOutboundTCPFilterChainOpts`,
networkfilter.go `buildOutboundNetworkFilters*`, tunnelingconfig/apply.go):

* the egress listener's VirtualServices any of whose hosts `Matches` the service (every one, in
  the listener's order: sidecars do not pick a single VirtualService for L4 routes);
* `tls[]` only on HTTPS/TLS ports, `tcp[]` only on the other TCP-family and auto ports;
* a match entry applies when its static predicates hold for the proxy: `port` 0 or the port
  being built, `sourceLabels` within the proxy's labels, `sourceNamespace` empty or the proxy's,
  `gateways` empty or naming `mesh` (unlike HTTP routes, `gateways` does not switch the source
  predicates off);
* tcp: rules in order; a rule without `match`, or a matching entry without `destinationSubnets`
  (or any on a unix socket), gives a chain with the service's own CIDR and ends the walk; the
  matching subnet entries of one rule become one `prefix_ranges` chain; without a terminal chain
  the service's default chain follows;
* tls: a chain per matching entry with `server_names` from its `sniHosts` and `prefix_ranges`
  from its `destinationSubnets`, else the service's CIDR; the same (sniHosts, subnets) twice is
  built once; when any entry matched, the service's own SNI chain is left out;
* one destination: `tcp_proxy {stat_prefix: cluster, cluster}`; several: weighted clusters (weight
  0 dropped) with stat prefix `<vs name>.<vs namespace>`. The DestinationRule of the first
  destination's host, its top-level policy only, adds idle_timeout and
  max_downstream_connection_duration (connectionPool.tcp), a source-IP hash policy
  (loadBalancer.consistentHash.useSourceIp; a subset's own load balancer decides for that subset)
  and tunneling_config (the subset's tunnel for a subset destination, else the top-level one).
  The service's default chain gets the same fields from the service's DestinationRule.

The results are frozen values: they are part of the listener's memo key (listeners_outbound.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.v3 import hash_policy_pb2

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.hostname import is_wildcarded, matches
from xds_server.config.traffic import ConnectionPool, Duration
from xds_server.mesh import names
from xds_server.mesh.destination_rules import MergedDestinationRule, PolicyHosts
from xds_server.mesh.scope import ProxyTraits, Scope
from xds_server.mesh.services import ServiceModel
from xds_server.mesh.virtual_services import MESH_GATEWAY, ResolvedVirtualService
from xds_server.translate import envoy
from xds_server.translate.http_routes import destination_cluster


@dataclass(frozen=True, slots=True)
class TcpProxySpec:
    """Everything one tcp_proxy filter's bytes depend on."""

    stat_prefix: str
    cluster: str = ""  # one destination
    weighted: tuple[tuple[str, int], ...] = ()  # several: (cluster, weight > 0), in route order
    idle_timeout: Duration | None = None
    max_connection_duration: Duration | None = None
    hash_source_ip: bool = False
    tunnel_hostname: str | None = None  # tunneling_config.hostname `host:port`
    tunnel_use_post: bool = False

    def config(self) -> tcp_proxy_pb2.TcpProxy:
        out = tcp_proxy_pb2.TcpProxy(stat_prefix=self.stat_prefix)
        if self.weighted:
            out.weighted_clusters.clusters.extend(
                tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight)
                for name, weight in self.weighted)
        else:
            out.cluster = self.cluster
        if self.idle_timeout is not None:
            out.idle_timeout.CopyFrom(self.idle_timeout.to_proto())
        if self.max_connection_duration is not None:
            out.max_downstream_connection_duration.CopyFrom(self.max_connection_duration.to_proto())
        if self.hash_source_ip:
            out.hash_policy.append(hash_policy_pb2.HashPolicy(source_ip=hash_policy_pb2.HashPolicy.SourceIp()))
        if self.tunnel_hostname is not None:
            out.tunneling_config.hostname = self.tunnel_hostname
            out.tunneling_config.use_post = self.tunnel_use_post
        return out

    def filter(self) -> listener_components_pb2.Filter:
        return listener_components_pb2.Filter(name=envoy.TCP_PROXY, typed_config=envoy.pack(self.config()))


@dataclass(frozen=True, slots=True)
class L4Chain:
    """One network filter chain of a service port: its runtime match and its tcp_proxy."""

    tcp: TcpProxySpec
    sni_hosts: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    config: str = ""  # the VirtualService that made it, as chain metadata `istio.config`


@dataclass(frozen=True, slots=True)
class L4Rules:
    """One egress listener's VirtualServices that have tcp or tls routes, indexed by host so that
    finding a service's (istio `getConfigsForHost`) does not test every one against every service."""

    ordered: tuple[ResolvedVirtualService, ...] = ()
    exact: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    wildcards: tuple[tuple[int, str], ...] = ()  # (position, wildcard host)

    @classmethod
    def of(cls, selected: Iterable[ResolvedVirtualService]) -> L4Rules:
        ordered = tuple(vs for vs in selected if vs.spec.tcp or vs.spec.tls)
        if not ordered:
            return NO_L4_RULES
        exact: dict[str, list[int]] = {}
        wildcards: list[tuple[int, str]] = []
        for i, vs in enumerate(ordered):
            for host in vs.spec.hosts:
                if is_wildcarded(host):
                    wildcards.append((i, host))
                else:
                    exact.setdefault(host, []).append(i)
        return cls(ordered, {h: tuple(v) for h, v in exact.items()}, tuple(wildcards))

    def for_host(self, hostname: str) -> list[ResolvedVirtualService]:
        """Every VirtualService one of whose hosts `Matches` the hostname, in listener order."""
        if not self.ordered:
            return []
        if is_wildcarded(hostname):
            return [vs for vs in self.ordered if any(matches(h, hostname) for h in vs.spec.hosts)]
        found = set(self.exact.get(hostname, ()))
        found.update(i for i, host in self.wildcards if matches(host, hostname))
        return [self.ordered[i] for i in sorted(found)]


NO_L4_RULES = L4Rules()


def sets_tcp_proxy_fields(spec: pb.DestinationRule) -> bool:
    """Whether a DestinationRule sets anything a tcp_proxy reads (its `policy_hosts` predicate)."""
    policies = [spec.traffic_policy] if spec.HasField("traffic_policy") else []
    policies += [s.traffic_policy for s in spec.subsets if s.HasField("traffic_policy")]
    for policy in policies:
        tcp = policy.connection_pool.tcp
        if (tcp.HasField("idle_timeout") or tcp.HasField("max_connection_duration") or policy.HasField("tunnel")
                or policy.load_balancer.consistent_hash.use_source_ip):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ChainContext:
    """What every service port of one outbound build shares."""

    scope: Scope
    traits: ProxyTraits
    policy_hosts: PolicyHosts


def service_chains(ctx: ChainContext, svc: ServiceModel, rules: L4Rules, port: int, tls: bool,
                   cidrs: tuple[str, ...], default_sni: tuple[str, ...]) -> list[L4Chain]:
    """The network chains of `svc` on `port` (the port being built; 0 for a unix socket).

    `cidrs` is the service's own CIDR match (a CIDR address), `default_sni` the server names of its
    default TLS chain (VIP-less TLS ports; empty unless `tls`); `rules` the egress listener's."""
    configs = rules.for_host(svc.hostname)
    builder = _ChainBuilder(ctx.scope, ctx.traits, port, ctx.policy_hosts)
    if not configs:
        return [L4Chain(builder.default_proxy(svc), default_sni, cidrs)]
    if tls:
        chains = builder.tls_chains(configs, cidrs)
        if chains:
            return _first_of_each_match(chains)
        return [L4Chain(builder.default_proxy(svc), default_sni, cidrs)]
    chains, terminal = builder.tcp_chains(configs, cidrs)
    if not terminal:
        chains.append(L4Chain(builder.default_proxy(svc), (), cidrs))
    return _first_of_each_match(chains)


def _first_of_each_match(chains: list[L4Chain]) -> list[L4Chain]:
    """Envoy rejects a listener with two chains of one match; the first one is the one a
    connection would meet (istiod emits both, and the listener is rejected)."""
    if len(chains) < 2:
        return chains
    seen: set[tuple[frozenset[str], frozenset[str]]] = set()
    out = []
    for chain in chains:
        key = (frozenset(h for h in chain.sni_hosts if h != "*"), frozenset(map(_network, chain.cidrs)))
        if key in seen:
            continue
        seen.add(key)
        out.append(chain)
    return out


def _network(cidr: str) -> str:
    """`10.3.0.5` and `10.3.0.5/32` are one prefix range to Envoy."""
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        return cidr


@dataclass(slots=True)
class _ChainBuilder:
    scope: Scope
    traits: ProxyTraits
    port: int
    policy_hosts: PolicyHosts

    # ------------------------------------------------------------ static predicates
    def _applies(self, match: pb.L4MatchAttributes | pb.TLSMatchAttributes) -> bool:
        """istio `matchTCP` / `matchTLS`: what can be decided for this proxy and port now."""
        if match.gateways and MESH_GATEWAY not in match.gateways:
            return False
        labels = self.traits.label_map
        if any(labels.get(k) != v for k, v in match.source_labels.items()):
            return False
        if match.port and match.port != self.port:
            return False
        return not match.source_namespace or match.source_namespace == self.scope.namespace

    # ------------------------------------------------------------ tls
    def tls_chains(self, configs: Sequence[ResolvedVirtualService], cidrs: tuple[str, ...]) -> list[L4Chain]:
        handled: set[str] = set()
        out: list[L4Chain] = []
        for vs in configs:
            for rule in (r for r in vs.spec.tls if r.route):  # validation requires a route
                for match in rule.match:
                    if not self._applies(match):
                        continue
                    if match.destination_subnets and self.port > 0:
                        # As istiod: the override stays for the later entries of the walk too.
                        cidrs = tuple(match.destination_subnets)
                    # istio `hashRuntimeTLSMatchPredicates`: the entry's own sniHosts and subnets.
                    key = ",".join(match.sni_hosts) + "|" + ",".join(match.destination_subnets)
                    if key in handled:
                        continue
                    handled.add(key)
                    out.append(L4Chain(self.route_proxy(rule.route, vs), tuple(sorted(match.sni_hosts)), cidrs,
                                       config_path(vs)))
        return out

    # ------------------------------------------------------------ tcp
    def tcp_chains(self, configs: Sequence[ResolvedVirtualService],
                   cidrs: tuple[str, ...]) -> tuple[list[L4Chain], bool]:
        """The chains and whether a terminal one (no runtime match beyond the service's) was made."""
        out: list[L4Chain] = []
        terminal = False
        for vs in configs:
            for rule in (r for r in vs.spec.tcp if r.route):  # validation requires a route
                if not rule.match:
                    out.append(L4Chain(self.route_proxy(rule.route, vs), (), cidrs, config_path(vs)))
                    return out, True
                subnets: list[str] = []
                for match in rule.match:
                    if not self._applies(match):
                        continue
                    if not match.destination_subnets or self.port == 0:
                        out.append(L4Chain(self.route_proxy(rule.route, vs), (), cidrs, config_path(vs)))
                        return out, True
                    subnets.extend(match.destination_subnets)
                if subnets:
                    out.append(L4Chain(self.route_proxy(rule.route, vs), (), tuple(subnets)))
                    if sorted(subnets) == sorted(cidrs):
                        terminal = True  # the service's own chain would have this very match
        return out, terminal

    # ------------------------------------------------------------ filters
    def route_proxy(self, routes: Sequence[pb.RouteDestination], vs: ResolvedVirtualService) -> TcpProxySpec:
        """istio `buildOutboundNetworkFilters`: the DestinationRule is the first destination's."""
        first = routes[0].destination
        service = self.scope.service(first.host)
        rule = self._destination_rule(service) if service is not None else None
        if len(routes) == 1:
            cluster = self._cluster(first, service)
            return _with_policy(TcpProxySpec(stat_prefix=cluster, cluster=cluster), rule, first.subset)
        weighted = []
        for rd in routes:
            if rd.weight > 0:
                dest = rd.destination
                weighted.append((self._cluster(dest, self.scope.service(dest.host)), rd.weight))
        return _with_policy(TcpProxySpec(stat_prefix=f"{vs.ref.name}.{vs.namespace}", weighted=tuple(weighted)),
                            rule, "")

    def default_proxy(self, svc: ServiceModel) -> TcpProxySpec:
        """The service's own chain. An explicit egress port that the (single-port) service does not
        declare still goes to the service's port, as istiod does."""
        port = svc.ports[0].number if len(svc.ports) == 1 else self.port
        cluster = names.outbound_cluster(port, svc.hostname)
        return _with_policy(TcpProxySpec(stat_prefix=cluster, cluster=cluster), self._destination_rule(svc), "")

    def _cluster(self, dest: pb.Destination, service: ServiceModel | None) -> str:
        """istio `GetDestinationCluster` with the service of the host; validation requires the host
        of a tcp or tls destination, so it is never istiod's UnknownService."""
        single_port = service.ports[0].number if service is not None and len(service.ports) == 1 else None
        return destination_cluster(dest, self.port, single_port)

    def _destination_rule(self, svc: ServiceModel) -> MergedDestinationRule | None:
        if not self.policy_hosts.may_match(svc.hostname):
            return None
        return self.scope.destination_rule(svc.hostname, svc.namespace, self.traits)


def _with_policy(spec: TcpProxySpec, rule: MergedDestinationRule | None, subset: str) -> TcpProxySpec:
    """networkfilter.go: idle/duration from the top-level connectionPool.tcp, `maybeSetHashPolicy`,
    `tunnelingconfig.Apply`. Port-level settings are not read here (istiod reads the rule's
    top-level trafficPolicy only)."""
    if rule is None:
        return spec
    top = rule.spec.traffic_policy if rule.spec.HasField("traffic_policy") else None
    tcp = ConnectionPool.of(top.connection_pool).tcp if top is not None else None
    source_ip = top is not None and top.load_balancer.consistent_hash.use_source_ip
    tunnel: pb.TrafficPolicy.TunnelSettings | None = None
    if top is not None and top.HasField("tunnel") and not subset:
        tunnel = top.tunnel
    for s in rule.spec.subsets:
        if s.name != subset:
            continue
        policy = s.traffic_policy
        if s.HasField("traffic_policy") and policy.HasField("load_balancer"):
            source_ip = policy.load_balancer.consistent_hash.use_source_ip
        if subset and s.HasField("traffic_policy") and policy.HasField("tunnel"):
            tunnel = policy.tunnel
        break
    return replace(
        spec,
        idle_timeout=tcp.idle_timeout if tcp is not None else None,
        max_connection_duration=tcp.max_connection_duration if tcp is not None else None,
        hash_source_ip=bool(source_ip),
        tunnel_hostname=_join_host_port(tunnel.target_host, tunnel.target_port) if tunnel is not None else None,
        tunnel_use_post=tunnel is not None and tunnel.protocol == "POST",
    )


def _join_host_port(host: str, port: int) -> str:
    """Go's net.JoinHostPort: IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def config_path(vs: ResolvedVirtualService) -> str:
    """istio `BuildConfigInfoMetadata`: `/apis/<group>/<version>/namespaces/<ns>/virtual-service/<name>`."""
    return f"/apis/{vs.source.api_version}/namespaces/{vs.namespace}/virtual-service/{vs.ref.name}"
