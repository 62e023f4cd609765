from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.resources import snapshot
from xds_server.app import App
from xds_server.resources import ProxySnapshot
from xds_server.settings import Settings
from xds_server.translate import Generated


class World:
    """The translator replaced by a snapshot the test controls (for xDS conformance tests)."""

    def __init__(self) -> None:
        self.default: ProxySnapshot = snapshot()
        self.per_proxy: dict[str, ProxySnapshot] = {}
        self.app: App | None = None

    def generate(self, view: Any, proxy: Any, memo: Any, previous: Any) -> Generated:
        # No dependencies reported: every push asks again.
        return Generated(self.per_proxy.get(proxy.key, self.default))

    async def publish(self, snap: ProxySnapshot, proxy_key: str | None = None) -> None:
        if proxy_key is None:
            self.default = snap
        else:
            self.per_proxy[proxy_key] = snap
        assert self.app is not None
        await self.app.planner.push(frozenset())


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0, drain_seconds=0), sources=[],
              generate=w.generate)
    w.app = app
    await app.start()
    try:
        yield w
    finally:
        await app.stop(0)
        await asyncio.sleep(0)


@pytest.fixture
def target(world: World) -> str:
    assert world.app is not None
    return f"127.0.0.1:{world.app.xds_port}"
