"""Real-pod end-to-end harness: network namespaces, istio-init iptables, real Envoys, tiny apps.

Entry points: `Run` (one per pytest session: unique name prefix, crash cleanup), `Mesh` (node
namespace, bridge, DNS, optional xds-server), `Pod` (namespace on the bridge, apps, capture,
Envoy), `Envoy` (admin API helpers and waits), `wait_for` (the only way to wait).
"""

from e2e.harness.apps import HttpResult, TcpResult, TlsClient
from e2e.harness.envoy import Envoy, envoy_binary
from e2e.harness.loop import RequestLoop
from e2e.harness.mesh import Mesh, Service
from e2e.harness.pod import Pod
from e2e.harness.run import Run
from e2e.harness.waits import GiveUp, WaitTimeout, wait_for

__all__ = [
           "Envoy",
           "GiveUp",
           "HttpResult",
           "Mesh",
           "Pod",
           "RequestLoop",
           "Run",
           "Service",
           "TcpResult",
           "TlsClient",
           "WaitTimeout",
           "envoy_binary",
           "wait_for",
]
