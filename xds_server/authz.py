"""Authorization of xDS streams over mTLS: may this certificate claim this node?

The xds layer parses the peer's identities (xds/auth.py); this module knows where the expected
service account comes from: the proxy's Pod in the store (found as the translator finds it),
else the node's SERVICE_ACCOUNT metadata (istiod's rule), else only the namespace is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xds_server.mesh.proxy import Proxy
from xds_server.mesh.workload import workload_of
from xds_server.store import Store
from xds_server.xds.auth import Authorize, PeerIdentity, match, parse_spiffe


def expected_service_account(store: Store, proxy: Any) -> str:
    pod = workload_of(store.view(), proxy).pod
    if pod is not None:
        return pod.service_account
    claimed = str(getattr(proxy, "service_account", "") or "")
    spiffe = parse_spiffe(claimed)  # some agents send the SPIFFE form: its service account counts
    return spiffe.service_account if spiffe is not None else claimed


def store_authorizer(store: Store) -> Authorize[Proxy]:
    def authorize(identities: Sequence[PeerIdentity], proxy: Proxy) -> str | None:
        return match(identities, proxy.namespace, expected_service_account(store, proxy))

    return authorize
