"""A push's fan-out as the rest of the server sees it: which streams still owe their client the push.

The garbage collector's tick waits while any do (push/collector.py); the count must follow the
streams exactly, or the tick would wait for nothing (always `longest_wait` late) or run in the
middle of a fan-out. Real translator, real gRPC, clients that subscribe and ACK like Envoy.
"""

from __future__ import annotations

from tests.integration import test_incremental_push
from tests.integration.test_incremental_push import NEW_POD, load, settle
from tests.support.ads_client import AdsClient, until
from xds_server.app import App
from xds_server.resources import TypeUrl

# The incremental-push tests' server on their mesh, as a fixture of this module too.
app = test_incremental_push.app


async def test_streams_woken_by_a_push_count_until_they_have_built_their_answer(app: App) -> None:
    target = f"127.0.0.1:{app.xds_port}"
    clients = [AdsClient(target, delta=True) for _ in range(3)]
    budget = app.services.budget
    try:
        for c in clients:
            await settle(c, "a")
        assert app.services.pending_wakes == 0
        # The send bound reached: the woken streams wait for their turn, unanswered.
        held = budget.limit
        budget.charge(held)
        load(app, NEW_POD)
        await until(lambda: app.services.pending_wakes == 3, what="three streams woken by the push")
        assert not app.planner.pushing
        assert app.services.sending()  # the collector's tick waits
        for c in clients:
            await c.expect_none()
        budget.release(held)
        for c in clients:
            resp = await c.recv()
            assert resp.type_url == TypeUrl.ENDPOINT
            c.send(type_url=TypeUrl.ENDPOINT, response_nonce=resp.nonce)
        assert app.services.pending_wakes == 0
        await until(lambda: app.services.writes_in_flight == 0, what="every write completed")
        assert not app.services.sending()
        # A stream that ends while woken no longer counts.
        budget.charge(held)
        load(app, NEW_POD.replace("web-2", "web-3").replace("10.0.0.2", "10.0.0.3"))
        await until(lambda: app.services.pending_wakes == 3, what="three streams woken by the second push")
        await clients[0].close()
        await until(lambda: app.services.pending_wakes == 2, what="the closed stream uncounted")
        budget.release(held)
        for c in clients[1:]:
            assert (await c.recv()).type_url == TypeUrl.ENDPOINT
        assert app.services.pending_wakes == 0
    finally:
        for c in clients:
            await c.close()
    await until(lambda: not app.services.connections, what="streams gone")
    assert app.services.pending_wakes == 0
