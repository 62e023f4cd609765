"""What a stream keeps alive for as long as it lasts: not its first request.

The first request carries the node and its metadata (Istio's sidecars send several kB of it); the
proxy record keeps the parts the server uses, so the message itself must be freed once answered
(at 2,000 streams with the bench's small metadata it was 3 KB per connection).
"""

from __future__ import annotations

import gc

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from tests.conftest import World
from tests.support.ads_client import AdsClient, node, until
from tests.support.resources import eds_cluster, endpoints, snapshot
from xds_server.resources import TypeUrl

NODE_ID = "sidecar~10.0.0.7~keep-1.default~default.svc.cluster.local"


def live_requests_of(node_id: str) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, DeltaDiscoveryRequest) and o.node.id == node_id)


async def test_the_first_request_is_not_kept_alive_by_its_stream(world: World, target: str) -> None:
    await world.publish(snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1))))
    client = AdsClient(target, delta=True)
    try:
        client.send(node=node(NODE_ID, NAMESPACE="default", PADDING="x" * 4096), type_url=TypeUrl.CLUSTER)
        resp = await client.recv()
        assert [r.name for r in resp.resources] == ["a"]
        client.send(type_url=TypeUrl.CLUSTER, response_nonce=resp.nonce)  # the ACK replaces the client's own copy
        assert world.app is not None
        [conn] = world.app.services.connections.values()
        await until(lambda: conn.machine.statuses()[TypeUrl.CLUSTER].state == "SYNCED", what="CDS ACKed")
        assert live_requests_of(NODE_ID) == 0
        assert conn.proxy.key == NODE_ID  # what the server needs of the node is in the proxy record
    finally:
        await client.close()
