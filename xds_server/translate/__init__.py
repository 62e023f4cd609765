"""Pure translation: (StoreView, Proxy) -> ProxySnapshot. No I/O, no transport, no clock.

`generate` is the seam the push planner calls; everything below it is the Sidecar and
ServiceEntry semantics. Besides the snapshot it reports what the snapshot read (`Dependencies`),
which the push stage indexes to know which proxies a change reaches (push/dependencies.py); the
only state kept here is the translation cache (`Memo`).
"""

from xds_server.memo import Memo
from xds_server.mesh.proxy import InvalidNode, Proxy, proxy_from_node, proxy_from_node_message
from xds_server.translate.dependencies import Dependencies, ScopeDependencies
from xds_server.translate.generator import Generated, Previous, generate

__all__ = [
    "Dependencies", "Generated", "InvalidNode", "Memo", "Previous", "Proxy", "ScopeDependencies", "generate",
    "proxy_from_node", "proxy_from_node_message",
]
