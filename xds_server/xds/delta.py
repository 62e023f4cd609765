"""Incremental (delta) stream machine (DeltaAggregatedResources and the per-type Delta* RPCs).

Rules (Envoy's xds_protocol.rst, "Incremental xDS"; what both variants share is in machine.py):
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

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from xds_server.resources import WILDCARD_TYPES, Built, ProxySnapshot, ResourceMap, TypeUrl, built_name, changes
from xds_server.xds import wire
from xds_server.xds.known import KnownVersions
from xds_server.xds.machine import MachineBase, Outgoing, TypeState, eds_refs
from xds_server.xds.subscription import NameSets

_NONE: frozenset[str] = frozenset()


class DeltaState(TypeState):
    __slots__ = ("announce", "dirty", "known", "synced")

    def __init__(self, type_url: TypeUrl, name_sets: NameSets, known: KnownVersions) -> None:
        super().__init__(type_url, name_sets)
        self.known = known  # name -> version the client has (shares its bulk, known.py)
        self.announce: set[str] = set()  # names to put in removed_resources on the next response
        # The resources `known` was last brought in line with: every wanted entry at its version
        # and, for wildcard types, nothing else, except for the names in `dirty` (subscribed,
        # unsubscribed, dropped from `known` since, or removals held back); None when unsure.
        # From there the next diff only looks at what changed between the two mappings, plus `dirty`.
        self.synced: Mapping[str, Built] | None = None
        self.dirty: set[str] = set()


class DeltaMachine(MachineBase[DeltaState]):
    def on_request(self, req: DeltaDiscoveryRequest, snapshot: ProxySnapshot) -> list[Outgoing]:
        accepted = self._accept(req)
        if accepted is None:
            return []
        type_url, st, first = accepted
        out: list[Outgoing] = []
        # A stale nonce is counted, and its subscription changes still apply (xds_protocol.rst).
        is_current = self._is_reply(type_url, st, req.response_nonce)
        if is_current:
            self._record_reply(type_url, st, req, acked_version=st.status.sent_version)
        added: AbstractSet[str]
        removed: AbstractSet[str]
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
            st.announce.update(n for n in added - resources.keys() if n != "*")
        if first or not self._settled(st, resources):
            out.extend(self._respond(type_url, st, snapshot, initial=first))
        if type_url in (TypeUrl.LISTENER, TypeUrl.ROUTE) and is_current:
            out.extend(self._release_deferred(snapshot))
        return out

    # ------------------------------------------------------------------ internals
    def _settled(self, st: DeltaState, resources: Mapping[str, Built]) -> bool:
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

    def _new_state(self, type_url: TypeUrl, req: DeltaDiscoveryRequest) -> DeltaState:
        # A reconnecting client lists what it holds: only what differs is sent (java-control-plane #463).
        return DeltaState(type_url, self.name_sets, KnownVersions(req.initial_resource_versions))

    def _would_send(self, type_url: TypeUrl, st: DeltaState, snapshot: ProxySnapshot) -> bool:
        changed, removed = self._diff(type_url, st, snapshot)
        return bool(changed or removed)

    def _resend_endpoints(self, eds: DeltaState, clusters: Sequence[Built]) -> None:
        if eds.known:
            for name in eds_refs(clusters):
                if eds.known.pop(name, None) is not None:
                    eds.dirty.add(name)

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
        if type_url is TypeUrl.CLUSTER:
            self._clusters_changed(changed)
        removed.sort()  # the same bytes whichever way the diff was found
        # Everything of a shared mapping (a first response): its bytes and versions are shared too.
        whole = resources if isinstance(resources, ResourceMap) and len(changed) == len(resources) else None
        nonce = self._next_nonce()
        version = snapshot.version(type_url)
        if whole is not None:
            payload = wire.delta_response(type_url, nonce, whole.delta_entries(), removed, version, self.control_plane)
        else:
            # A push's change: the same bytes (but the nonce) for every stream that sends it, encoded once.
            changed.sort(key=built_name)
            payload = self.shared.delta_response(type_url, nonce, changed, removed, version, self.control_plane)
        known = st.known
        if whole is not None:
            known.update_from(whole.versions())  # shared, not copied
        else:
            for b in changed:
                known[b.name] = b.version
        for name in removed:
            known.pop(name, None)
        return self._record_sent(type_url, st, nonce, payload, version, len(changed), known, len(removed))
