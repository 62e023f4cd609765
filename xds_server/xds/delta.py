"""Incremental (delta) stream machine (DeltaAggregatedResources and the per-type Delta* RPCs).

Rules (reference/xds-protocol.md §6-§9):
- per stream and type, `known` holds the version of every resource the client has (seeded
  from initial_resource_versions on reconnect), so only new or changed resources are sent;
- deleted resources of wildcard types (CDS/LDS) go in removed_resources; named types
  (EDS/RDS) are never removed explicitly (they follow their parent), except a subscribed
  name that does not exist, which is announced once so the client stops waiting;
- subscribing again to a name re-sends it; subscription changes on a stale nonce still apply;
- a NACK is recorded and never answered with the same content;
- when a cluster changes, its endpoints are re-sent (Envoy re-warms it and waits for them);
- pushes go CDS -> EDS -> LDS -> RDS; cluster removals wait while listener/route changes are
  in flight (make before break).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from xds_server.resources import WILDCARD_TYPES, Built, ProxySnapshot, ResourceMap, TypeUrl, changes
from xds_server.xds import wire
from xds_server.xds.known import KnownVersions
from xds_server.xds.machine import MachineBase, Outgoing, TypeState, eds_refs
from xds_server.xds.status import Nack

_NONE: frozenset[str] = frozenset()


class DeltaState(TypeState):
    __slots__ = ("announce", "dirty", "known", "synced")

    def __init__(self, type_url: TypeUrl) -> None:
        super().__init__(type_url)
        self.known = KnownVersions()  # name -> version the client has (shares its bulk, known.py)
        self.announce: set[str] = set()  # names to put in removed_resources on the next response
        # The resources `known` was last brought in line with: every wanted entry at its version
        # and, for wildcard types, nothing else, except for the names in `dirty` (subscribed,
        # unsubscribed, dropped from `known` since, or removals held back); None when unsure.
        # From there the next diff only looks at what changed between the two mappings, plus `dirty`.
        self.synced: Mapping[str, Built] | None = None
        self.dirty: set[str] = set()


class DeltaMachine(MachineBase):
    control_plane = b""

    def on_request(self, req: DeltaDiscoveryRequest, snapshot: ProxySnapshot) -> list[Outgoing]:
        type_url = self._check_type(req.type_url)
        if type_url is None:
            return []
        self.observer.request(type_url)
        st = self.types.get(type_url)
        first = st is None
        if st is None:
            st = self.types[type_url] = DeltaState(type_url)
            st.known = KnownVersions(req.initial_resource_versions)
        assert isinstance(st, DeltaState)
        out: list[Outgoing] = []
        is_current = bool(req.response_nonce) and req.response_nonce == st.status.sent_nonce
        if req.response_nonce and not is_current:
            self.observer.stale_nonce(type_url)
        if is_current:
            now = self.clock()
            st.pending = ""
            if req.HasField("error_detail"):
                nack = Nack(req.response_nonce, st.status.sent_version, req.error_detail.message, now)
                st.status.nack = nack
                st.status.nacks += 1
                self.observer.nack(type_url, nack)
            else:
                st.status.acked_version = st.status.sent_version
                st.status.acked_nonce = req.response_nonce
                st.status.acked_at = now
                st.status.acks += 1
                st.status.nack = None
                self.observer.ack(type_url)
        if first or req.resource_names_subscribe or req.resource_names_unsubscribe:
            added, removed = st.sub.delta_update(req.resource_names_subscribe, req.resource_names_unsubscribe, first)
        else:
            added = removed = _NONE  # a plain ACK or NACK (most requests)
        if "*" in added or "*" in removed:
            st.synced = None  # what every name means changed: the next diff looks at everything
        elif added or removed:
            st.dirty.update(added)
            st.dirty.update(removed)
        resources = snapshot.get(type_url)
        if not first:
            for name in added:
                st.known.pop(name, None)  # the client may have dropped it: send it again
        for name in removed:
            if name == "*":
                continue
            if st.sub.wildcard and name in resources:
                st.known.pop(name, None)  # still part of the wildcard set: answer with it
            elif st.sub.wildcard:
                st.announce.add(name)
                st.known.pop(name, None)
            else:
                st.known.pop(name, None)  # the client dropped it; nothing to say
        if added:  # those that do not exist (yet): tell the client to stop waiting
            missing = added - resources.keys()
            missing.discard("*")
            st.announce |= missing
        if first or not self._settled(st, resources):
            out.extend(self._respond(type_url, st, snapshot, initial=first))
        if type_url in (TypeUrl.LISTENER, TypeUrl.ROUTE) and is_current:
            out.extend(self._release_deferred(snapshot))
        return out

    # ------------------------------------------------------------------ internals
    def _settled(self, st: DeltaState, resources: Mapping[str, Built]) -> bool:  # type: ignore[override]
        # `known` was brought in line with exactly this mapping, and nothing was (un)subscribed,
        # dropped or held back since: the diff would be empty.
        return resources is st.synced and not st.dirty and not st.announce and not st.deferred

    def _diff(self, type_url: TypeUrl, st: DeltaState, snapshot: ProxySnapshot) -> tuple[list[Built], list[str]]:
        resources = snapshot.get(type_url)
        known = st.known
        known_get = known.getter()
        sub = st.sub
        removed: list[str] = []
        if st.synced is not None:
            # Only entries that differ between the synced mapping and this one, and dirty names,
            # can differ from `known` (shared per push: O(changes) per stream, not O(resources)).
            candidates, gone = changes(st.synced, resources)
            wants = sub.wants
            changed = [b for b in candidates if wants(b.name) and known_get(b.name) != b.version]
            if type_url in WILDCARD_TYPES:
                removed = [n for n in gone if n in known]
            if st.dirty:
                listed = {b.name for b in changed}
                listed.update(removed)
                for name in st.dirty:
                    if name in listed:
                        continue
                    b = resources.get(name)
                    if b is not None and wants(name):
                        if known_get(name) != b.version:
                            changed.append(b)
                    elif type_url in WILDCARD_TYPES and name in known:
                        removed.append(name)  # gone, or no longer wanted
        elif not known and (sub.wildcard or len(sub.names & resources.keys()) == len(resources)):
            changed = list(resources.values())  # a first response: everything (set algebra, no loop)
        else:
            if sub.wildcard:
                changed = [b for n, b in resources.items() if known_get(n) != b.version]
            else:
                changed = [resources[n] for n in sub.names
                           if n in resources and known_get(n) != resources[n].version]
            if type_url in WILDCARD_TYPES:
                removed = [n for n in known if n not in resources or not sub.wants(n)]
        if st.announce:
            listed = set(removed)  # a set: a subscription can name 100k resources (never quadratic)
            removed.extend(n for n in st.announce if n not in resources and n not in listed)
        return changed, removed

    def _routes_will_change(self, snapshot: ProxySnapshot) -> bool:
        for type_url in (TypeUrl.LISTENER, TypeUrl.ROUTE):
            st = self.types.get(type_url)
            if st is None:
                continue
            if st.pending:
                return True
            changed, removed = self._diff(type_url, st, snapshot)  # type: ignore[arg-type]
            if changed or removed:
                return True
        return False

    def _respond(self, type_url: TypeUrl, st: DeltaState, snapshot: ProxySnapshot, *,
                 initial: bool = False) -> list[Outgoing]:
        changed, removed = self._diff(type_url, st, snapshot)
        st.announce.clear()
        resources = snapshot.get(type_url)
        st.synced = resources
        st.dirty = set()
        if type_url is TypeUrl.CLUSTER and removed:
            if self._routes_will_change(snapshot):
                st.deferred = True
                st.dirty = set(removed)  # they stay in `known` until released
                removed = []
            else:
                st.deferred = False
        if not changed and not removed and not (initial and type_url in WILDCARD_TYPES):
            return []
        if type_url is TypeUrl.CLUSTER and changed:
            eds = self.types.get(TypeUrl.ENDPOINT)
            if eds is not None and eds.known:  # type: ignore[attr-defined]
                for name in eds_refs(changed):
                    if eds.known.pop(name, None) is not None:  # type: ignore[attr-defined]
                        eds.dirty.add(name)  # type: ignore[attr-defined]
        removed.sort()  # the same bytes whichever way the diff was found
        whole = isinstance(resources, ResourceMap) and len(changed) == len(resources)
        if whole:
            entries: Iterable[bytes] = resources.delta_entries()  # type: ignore[union-attr]
        else:
            changed.sort(key=lambda b: b.name)
            entries = (b.delta_entry for b in changed)
        nonce = self._next_nonce()
        version = snapshot.version(type_url)
        payload = wire.delta_response(type_url, nonce, entries, removed, version, self.control_plane)
        known = st.known
        if whole:
            known.update_from(resources.versions())  # type: ignore[union-attr]  # shared, not copied
        else:
            for b in changed:
                known[b.name] = b.version
        for name in removed:
            known.pop(name, None)
        st.pending = nonce
        status = st.status
        status.sent_version = version
        status.sent_nonce = nonce
        status.sent_at = self.clock()
        status.sent_count = len(changed)
        status.responses += 1
        status.resource_versions = st.known
        return [Outgoing(type_url, payload, nonce, version, len(changed), len(removed))]
