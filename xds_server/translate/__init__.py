"""Pure translation: (StoreView, Proxy) -> ProxySnapshot. No I/O, no transport, no clock.

`generate` is the seam the push planner calls; everything below it is the Sidecar and
ServiceEntry semantics (see ../shared/reference/istio-translation.md).
"""

from xds_server.memo import Memo
from xds_server.mesh.proxy import InvalidNode, Proxy, proxy_from_node, proxy_from_node_message
from xds_server.translate.generator import forget, generate, reached

__all__ = [
    "InvalidNode", "Memo", "Proxy", "forget", "generate", "proxy_from_node", "proxy_from_node_message", "reached",
]
