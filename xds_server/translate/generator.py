"""generate(view, proxy, memo) -> ProxySnapshot. (Being written: see issue 4.)"""

from __future__ import annotations

from xds_server.resources import ProxySnapshot
from xds_server.store.view import StoreView
from xds_server.translate.memo import Memo
from xds_server.translate.proxy import Proxy


def generate(view: StoreView, proxy: Proxy, memo: Memo) -> ProxySnapshot:
    return ProxySnapshot({})
