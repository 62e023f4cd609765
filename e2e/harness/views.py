"""Small readers over Envoy config-dump JSON (listeners, routes), for waits and assertions."""

from __future__ import annotations

from typing import Any


def chain_clusters(listener: dict[str, Any]) -> dict[str, str]:
    """tcp_proxy cluster per filter-chain name (the default chain is keyed "<default>")."""
    chains = [(c.get("name", ""), c) for c in listener.get("filter_chains", [])]
    if "default_filter_chain" in listener:
        chains.append(("<default>", listener["default_filter_chain"]))
    out: dict[str, str] = {}
    for name, chain in chains:
        for f in chain.get("filters", []):
            cluster = f.get("typed_config", {}).get("cluster")
            if f.get("name") == "envoy.filters.network.tcp_proxy" and cluster:
                out[name] = cluster
    return out


def vhost_domains(route_config: dict[str, Any]) -> dict[str, list[str]]:
    return {v["name"]: v.get("domains", []) for v in route_config.get("virtual_hosts", [])}


def vhost_routes(route_config: dict[str, Any], vhost: str) -> list[dict[str, Any]]:
    """The routes of one virtual host (by name, e.g. "reviews.default.svc.cluster.local:9080")."""
    for v in route_config.get("virtual_hosts", []):
        if v["name"] == vhost:
            return list(v.get("routes", []))
    return []


def route_clusters(route: dict[str, Any]) -> dict[str, int]:
    """Cluster -> weight a route sends to."""
    return weighted_clusters(route.get("route", {}))


def weighted_clusters(action: dict[str, Any]) -> dict[str, int]:
    """Cluster -> weight of a route action or a tcp_proxy config: its one `cluster` (weight 1) or
    its weighted clusters (both spell them `cluster` / `weighted_clusters.clusters`)."""
    if "cluster" in action:
        return {action["cluster"]: 1}
    return {c["name"]: int(c.get("weight", 0)) for c in action.get("weighted_clusters", {}).get("clusters", [])}
