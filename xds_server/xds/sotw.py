"""State-of-the-world stream machine (StreamAggregatedResources and the per-type Stream* RPCs).

Rules (Envoy's xds_protocol.rst, "ACK/NACK and resource type instance version"; what both variants share
is in machine.py):
- a NACK (error_detail set) is recorded and answered only for names it adds; the same content is
  not resent;
- a request echoing a stale nonce is ignored (counted);
- an ACK gets no response unless it adds names, or EDS must be re-sent after a CDS change;
- LDS/CDS responses carry the full state, EDS/RDS the subscribed names that exist;
- pushes go CDS -> EDS -> LDS -> RDS; clusters removed while listeners/routes change stay in CDS
  until those changes are ACKed (make before break).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from xds_server.resources import WILDCARD_TYPES, Built, ProxySnapshot, TypeUrl
from xds_server.xds import wire
from xds_server.xds.machine import MachineBase, Outgoing, TypeState, eds_refs
from xds_server.xds.subscription import NameSets


def _view_version(snapshot: ProxySnapshot, type_url: TypeUrl, view: Mapping[str, Built]) -> str:
    if view is snapshot.get(type_url):
        return snapshot.version(type_url)
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(view):
        h.update(name.encode())
        h.update(b"\0")
        h.update(view[name].version.encode())
        h.update(b"\n")
    return h.hexdigest()


def _view(st: TypeState, resources: Mapping[str, Built]) -> Mapping[str, Built]:
    """What a response of this type holds: the snapshot's own mapping under a pure wildcard (so its
    version is the snapshot's), else the subscribed resources that exist."""
    return resources if st.sub.wildcard and not st.sub.names else st.sub.select(resources)


class SotwState(TypeState):
    __slots__ = ("force", "sent")

    def __init__(self, type_url: TypeUrl, name_sets: NameSets) -> None:
        super().__init__(type_url, name_sets)
        self.sent: Mapping[str, Built] = {}  # content of the last response
        self.force = False  # respond even if unchanged (EDS after a CDS change)


class SotwMachine(MachineBase[SotwState]):
    def on_request(self, req: DiscoveryRequest, snapshot: ProxySnapshot) -> list[Outgoing]:
        accepted = self._accept(req)
        if accepted is None:
            return []
        type_url, st, first = accepted
        if first or not req.response_nonce:
            # First request of this type on this stream (or a client that lost its nonces,
            # e.g. after reconnecting to another replica): always answer with current state.
            st.sub.sotw_update(req.resource_names)
            st.status.acked_version = req.version_info
            return self._respond(type_url, st, snapshot, initial=True)
        if not self._is_reply(type_url, st, req.response_nonce):
            return []  # stale: a newer response is on its way
        if self._record_reply(type_url, st, req, acked_version=req.version_info):
            added, _ = st.sub.sotw_update(req.resource_names)
            return self._respond(type_url, st, snapshot) if added else []
        added, changed = st.sub.sotw_update(req.resource_names)
        out: list[Outgoing] = []
        if added or st.force:
            out = self._respond(type_url, st, snapshot, force=True)
        elif changed and type_url in WILDCARD_TYPES:
            out = self._respond(type_url, st, snapshot)  # full-state types: the set shrank
        if type_url in (TypeUrl.LISTENER, TypeUrl.ROUTE):
            out.extend(self._release_deferred(snapshot))
        return out

    # ------------------------------------------------------------------ internals
    def _new_state(self, type_url: TypeUrl, req: DiscoveryRequest) -> SotwState:
        return SotwState(type_url, self.name_sets)

    def _would_send(self, type_url: TypeUrl, st: SotwState, snapshot: ProxySnapshot) -> bool:
        return _view_version(snapshot, type_url, _view(st, snapshot.get(type_url))) != st.status.sent_version

    def _resend_endpoints(self, eds: SotwState, clusters: Sequence[Built]) -> None:
        if eds_refs(clusters) & eds.sub.names:
            eds.force = True

    def _respond(self, type_url: TypeUrl, st: SotwState, snapshot: ProxySnapshot, *,
                 initial: bool = False, force: bool = False) -> list[Outgoing]:
        view = _view(st, snapshot.get(type_url))
        if type_url is TypeUrl.CLUSTER and st.sent:
            removed = st.sent.keys() - view.keys()
            if removed and self._routes_will_change(snapshot):
                view = {**view, **{n: st.sent[n] for n in removed}}
                st.deferred = True
            else:
                st.deferred = False
        if not view and not initial and not st.status.sent_nonce and type_url not in (
                TypeUrl.CLUSTER, TypeUrl.LISTENER):
            return []  # named resources that do not exist yet: remember, send when they appear
        if initial and not view and type_url not in (TypeUrl.CLUSTER, TypeUrl.LISTENER):
            return []
        version = _view_version(snapshot, type_url, view)
        if not (initial or force or st.force):
            if version == st.status.sent_version:
                return []
            if type_url not in WILDCARD_TYPES and all(
                    (old := st.sent.get(n)) is not None and old.version == b.version for n, b in view.items()):
                return []  # named types: a resource that went away is dropped with its parent, not pushed
        if force and not st.force and not initial and version == st.status.sent_version \
                and st.status.nack is not None:
            return []  # never answer with the content that was just rejected
        if type_url is TypeUrl.CLUSTER and TypeUrl.ENDPOINT in self.types:
            self._clusters_changed(
                [b for n, b in view.items() if (old := st.sent.get(n)) is None or old.version != b.version])
        nonce = self._next_nonce()
        payload = wire.sotw_response(type_url, version, nonce, (b.sotw_entry for b in view.values()),
                                     self.control_plane)
        st.sent = view
        st.force = False
        return self._record_sent(type_url, st, nonce, payload, version, len(view),
                                 {n: b.version for n, b in view.items()})
