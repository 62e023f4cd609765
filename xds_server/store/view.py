"""StoreView: a read-only view of one store generation, indexed for the translator.

Built once per generation (lazily, when a push or a new connection needs it) and shared by
every translation of that generation; indexes are computed on first use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import cached_property

from xds_server.config import (
    ConfigObject,
    IstioDestinationRule,
    IstioServiceEntry,
    IstioSidecar,
    IstioVirtualService,
    Kind,
    MeshConfig,
    Namespace,
    ObjectRef,
    Pod,
    Service,
)

MESH_FILE_NAME = "mesh-config-file"  # MeshConfig from --mesh-config beats the ConfigMap


def _age_key(obj: ConfigObject) -> tuple[str, str, str]:
    """Istio's ordering: oldest first, then namespace, then name."""
    return (obj.meta.creation_timestamp, obj.meta.namespace, obj.meta.name)


class ChangeSet:
    """What changed between an earlier generation and a later one, indexed for relevance checks.

    The translator uses it to reuse work from that earlier generation: a Pod change in one
    namespace cannot change the endpoints of another namespace's services.
    """

    __slots__ = ("base_generation", "by_kind", "refs")

    def __init__(self, base_generation: int, refs: Iterable[ObjectRef]) -> None:
        self.base_generation = base_generation
        self.refs = frozenset(refs)
        by_kind: dict[str, set[str]] = {}
        for ref in self.refs:
            by_kind.setdefault(ref.kind, set()).add(ref.namespace)
        self.by_kind: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in by_kind.items()}

    def namespaces(self, kind: str) -> frozenset[str]:
        """Namespaces with a changed object of `kind` (empty: none changed)."""
        return self.by_kind.get(kind, frozenset())

    def kinds(self) -> frozenset[str]:
        return frozenset(self.by_kind)


class StoreView:
    def __init__(self, generation: int, objects: Mapping[ObjectRef, ConfigObject],
                 domain_suffix: str = "cluster.local", changes: ChangeSet | None = None,
                 history: tuple[ChangeSet, ...] = (), previous: StoreView | None = None,
                 lineage: object | None = None) -> None:
        self.generation = generation
        # The store this view belongs to: generation numbers compare only within one lineage
        # (a view built on its own is a lineage of its own).
        self.lineage = lineage if lineage is not None else object()
        self._objects = objects
        # Kubernetes service hosts are <name>.<namespace>.svc.<domain_suffix> (serve --domain-suffix).
        self.domain_suffix = domain_suffix
        # Refs changed since the view the store built before this one (None: unknown), and the
        # change sets of the few views before that, newest first.
        self.changes = changes
        self._history = history
        self._since: dict[int, ChangeSet | None] = {}
        # Indexes of the previous view that these changes leave as they were: taken over instead of
        # rebuilt (a Pod change re-sorts one namespace's Pods, not every object of the mesh). Only
        # the indexes are kept, never the previous view itself (no chain of views in memory).
        self._kinds: dict[str, list[ConfigObject]] = {}
        self._pods_before: tuple[dict[str, list[Pod]], ChangeSet] | None = None
        self._selected_before: dict[tuple[str, frozenset[tuple[str, str]]], list[Pod]] = {}
        if (previous is not None and changes is not None and changes.base_generation == previous.generation
                and previous.lineage is self.lineage):
            changed = changes.kinds()
            self._kinds = {k: v for k, v in previous._kinds.items() if k not in changed}
            pods = previous.__dict__.get("_pods_by_namespace")
            if pods is not None:
                self._pods_before = (pods, changes)
            touched = changes.namespaces(Kind.POD)
            self._selected_before = {k: v for k, v in previous._selected.items() if k[0] not in touched}

    def changes_since(self, generation: int) -> ChangeSet | None:
        """What changed between `generation` and this view, when known (else None: assume anything)."""
        if generation == self.generation:
            return _NO_CHANGES
        if self.changes is not None and self.changes.base_generation == generation:
            return self.changes
        if generation in self._since:
            return self._since[generation]
        found: ChangeSet | None = None
        refs: set[ObjectRef] = set()
        for step in (self.changes, *self._history) if self.changes is not None else ():
            refs.update(step.refs)
            if step.base_generation == generation:
                found = ChangeSet(generation, refs)
                break
            if step.base_generation < generation:
                break
        self._since[generation] = found
        return found

    @classmethod
    def build(cls, generation: int, objects: Iterable[ConfigObject], domain_suffix: str = "cluster.local") -> StoreView:
        return cls(generation, {o.ref: o for o in objects}, domain_suffix)

    def get(self, ref: ObjectRef) -> ConfigObject | None:
        return self._objects.get(ref)

    # ------------------------------------------------------------ by kind
    def _of_kind(self, kind: str) -> list[ConfigObject]:
        """Objects of one kind, oldest first (shared: do not modify)."""
        found = self._kinds.get(kind)
        if found is None:
            found = [obj for obj in self._objects.values() if obj.kind == kind]
            found.sort(key=_age_key)
            self._kinds[kind] = found
        return found

    @cached_property
    def pods(self) -> tuple[Pod, ...]:
        return tuple(self._of_kind(Kind.POD))  # type: ignore[arg-type]

    @cached_property
    def services(self) -> tuple[Service, ...]:
        """Kubernetes Services, oldest first."""
        return tuple(self._of_kind(Kind.SERVICE))  # type: ignore[arg-type]

    @cached_property
    def service_entries(self) -> tuple[IstioServiceEntry, ...]:
        return tuple(self._of_kind(Kind.SERVICE_ENTRY))  # type: ignore[arg-type]

    @cached_property
    def sidecars(self) -> tuple[IstioSidecar, ...]:
        return tuple(self._of_kind(Kind.SIDECAR))  # type: ignore[arg-type]

    @cached_property
    def virtual_services(self) -> tuple[IstioVirtualService, ...]:
        return tuple(self._of_kind(Kind.VIRTUAL_SERVICE))  # type: ignore[arg-type]

    @cached_property
    def destination_rules(self) -> tuple[IstioDestinationRule, ...]:
        return tuple(self._of_kind(Kind.DESTINATION_RULE))  # type: ignore[arg-type]

    @cached_property
    def namespaces(self) -> tuple[Namespace, ...]:
        return tuple(self._of_kind(Kind.NAMESPACE))  # type: ignore[arg-type]

    @cached_property
    def mesh(self) -> MeshConfig:
        """--mesh-config file if given, else ConfigMap `istio` in the root namespace, else defaults."""
        meshes: list[MeshConfig] = self._of_kind(Kind.MESH_CONFIG)  # type: ignore[assignment]
        for m in meshes:
            if m.meta.name == MESH_FILE_NAME:
                return m
        default = MeshConfig()
        for m in meshes:
            if m.meta.namespace == default.root_namespace:
                return m
        return meshes[0] if meshes else default

    # ------------------------------------------------------------ indexes
    @cached_property
    def _pods_by_namespace(self) -> dict[str, list[Pod]]:
        before = self._pods_before
        self._pods_before = None
        if before is not None:
            return _pods_updated(before[0], before[1], self._objects)
        out: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            out[pod.meta.namespace].append(pod)
        return dict(out)

    @cached_property
    def _pods_by_ip(self) -> dict[str, Pod]:
        out: dict[str, Pod] = {}
        for pod in self.pods:
            if pod.terminating:
                continue
            for ip in pod.ips:
                out.setdefault(ip, pod)
        return out

    def pods_in(self, namespace: str) -> list[Pod]:
        return self._pods_by_namespace.get(namespace, [])

    def pod(self, namespace: str, name: str) -> Pod | None:
        return self._objects.get(ObjectRef(Kind.POD, namespace, name))  # type: ignore[return-value]

    def pod_by_ip(self, ip: str) -> Pod | None:
        return self._pods_by_ip.get(ip)

    @cached_property
    def _selected(self) -> dict[tuple[str, frozenset[tuple[str, str]]], list[Pod]]:
        found = self._selected_before  # answers for namespaces whose Pods did not change
        self._selected_before = {}
        return found

    @cached_property
    def _pods_by_label(self) -> dict[str, dict[tuple[str, str], list[Pod]]]:
        return {}

    def pods_selected(self, namespace: str, selector: Mapping[str, str]) -> list[Pod]:
        """Pods in namespace whose labels include selector, oldest first (memoised per view)."""
        key = (namespace, frozenset(selector.items()))
        found = self._selected.get(key)
        if found is None:
            items = key[1]
            if not items:
                found = list(self.pods_in(namespace))
            else:
                # A label index per namespace: one selector is a lookup, not a walk over its Pods.
                by_label = self._pods_by_label.get(namespace)
                if by_label is None:
                    by_label = self._pods_by_label[namespace] = {}
                    for pod in self.pods_in(namespace):
                        for item in pod.meta.labels.items():
                            by_label.setdefault(item, []).append(pod)
                lists = [by_label.get(item, _NONE) for item in items]
                shortest = min(lists, key=len)
                found = list(shortest) if len(items) == 1 else \
                    [p for p in shortest if items <= p.meta.labels.items()]
            self._selected[key] = found
        return found

    @cached_property
    def _services_by_namespace(self) -> dict[str, list[Service]]:
        out: dict[str, list[Service]] = defaultdict(list)
        for svc in self.services:
            out[svc.meta.namespace].append(svc)
        return out

    def services_in(self, namespace: str) -> list[Service]:
        return self._services_by_namespace.get(namespace, [])

    @cached_property
    def _service_entries_by_namespace(self) -> dict[str, list[IstioServiceEntry]]:
        out: dict[str, list[IstioServiceEntry]] = defaultdict(list)
        for se in self.service_entries:
            out[se.meta.namespace].append(se)
        return out

    def service_entries_in(self, namespace: str) -> list[IstioServiceEntry]:
        """ServiceEntries of a namespace, oldest first."""
        return self._service_entries_by_namespace.get(namespace, [])

    @cached_property
    def _sidecars_by_namespace(self) -> dict[str, list[IstioSidecar]]:
        out: dict[str, list[IstioSidecar]] = defaultdict(list)
        for sc in self.sidecars:
            out[sc.meta.namespace].append(sc)
        return out

    def sidecars_in(self, namespace: str) -> list[IstioSidecar]:
        """Sidecars of a namespace, oldest first."""
        return self._sidecars_by_namespace.get(namespace, [])


_NO_CHANGES = ChangeSet(-1, ())
_NONE: list[Pod] = []


def _pods_updated(before: dict[str, list[Pod]], changes: ChangeSet,
                  objects: Mapping[ObjectRef, ConfigObject]) -> dict[str, list[Pod]]:
    """The previous view's Pods by namespace, with these changes applied (only their namespaces re-sorted)."""
    out = dict(before)
    changed: dict[str, list[ObjectRef]] = {}
    for ref in changes.refs:
        if ref.kind == Kind.POD:
            changed.setdefault(ref.namespace, []).append(ref)
    for ns, refs in changed.items():
        gone = set(refs)
        pods = [p for p in before.get(ns, ()) if p.ref not in gone]
        for ref in refs:
            obj = objects.get(ref)
            if obj is not None:
                pods.append(obj)  # type: ignore[arg-type]
        if pods:
            pods.sort(key=_age_key)
            out[ns] = pods
        else:
            out.pop(ns, None)
    return out
