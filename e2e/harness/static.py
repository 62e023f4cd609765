"""A static Envoy bootstrap that does what a sidecar does with no translator at all.

15001 (virtualOutbound, use_original_dst) passes every captured outbound connection to its
original destination; 15006 (virtualInbound, original_dst listener filter) hands inbound ones to
the app from 127.0.0.6. Used to prove the capture plumbing independently of the xDS server.
"""

from __future__ import annotations

from typing import Any

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ORIGINAL_DST = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"


def _tcp_proxy(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY, "stat_prefix": stat_prefix, "cluster": cluster}}


def _passthrough(name: str, source: str | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                               "connect_timeout": "2s"}
    if source:
        cluster["upstream_bind_config"] = {"source_address": {"address": source, "port_value": 0}}
    return cluster


def capture_bootstrap(node_id: str = "sidecar~0.0.0.0~static.default~default.svc.cluster.local",
                      admin_port: int = 15000) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": "static"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualOutbound",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                    "use_original_dst": True,
                    "traffic_direction": "OUTBOUND",
                    "filter_chains": [{"name": "virtualOutbound-catchall-tcp",
                                       "filters": [_tcp_proxy("PassthroughCluster", "PassthroughCluster")]}],
                },
                {
                    "name": "virtualInbound",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
                    "traffic_direction": "INBOUND",
                    "listener_filters": [{"name": "envoy.filters.listener.original_dst",
                                          "typed_config": {"@type": ORIGINAL_DST}}],
                    "filter_chains": [{"name": "virtualInbound-catchall-tcp",
                                       "filters": [_tcp_proxy("InboundPassthroughCluster",
                                                              "InboundPassthroughCluster")]}],
                },
            ],
            "clusters": [_passthrough("PassthroughCluster"),
                         _passthrough("InboundPassthroughCluster", source="127.0.0.6")],
        },
    }
