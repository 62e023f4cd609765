"""StoreView: a read-only view of one store generation, indexed for the translator.

Built once per generation (lazily, when a push or a new connection needs it) and shared by
every translation of that generation; indexes are computed on first use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import cached_property

from xds_server.model import (
    ConfigObject,
    IstioServiceEntry,
    IstioSidecar,
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
                 history: tuple[ChangeSet, ...] = ()) -> None:
        self.generation = generation
        self._objects = objects
        # Kubernetes service hosts are <name>.<namespace>.svc.<domain_suffix> (serve --domain-suffix).
        self.domain_suffix = domain_suffix
        # Refs changed since the view the store built before this one (None: unknown), and the
        # change sets of the few views before that, newest first.
        self.changes = changes
        self._history = history
        self._since: dict[int, ChangeSet | None] = {}

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
    @cached_property
    def _by_kind(self) -> dict[str, list[ConfigObject]]:
        out: dict[str, list[ConfigObject]] = defaultdict(list)
        for obj in self._objects.values():
            out[obj.kind].append(obj)
        for objs in out.values():
            objs.sort(key=_age_key)
        return out

    @cached_property
    def pods(self) -> tuple[Pod, ...]:
        return tuple(self._by_kind.get(Kind.POD, ()))  # type: ignore[arg-type]

    @cached_property
    def services(self) -> tuple[Service, ...]:
        """Kubernetes Services, oldest first."""
        return tuple(self._by_kind.get(Kind.SERVICE, ()))  # type: ignore[arg-type]

    @cached_property
    def service_entries(self) -> tuple[IstioServiceEntry, ...]:
        return tuple(self._by_kind.get(Kind.SERVICE_ENTRY, ()))  # type: ignore[arg-type]

    @cached_property
    def sidecars(self) -> tuple[IstioSidecar, ...]:
        return tuple(self._by_kind.get(Kind.SIDECAR, ()))  # type: ignore[arg-type]

    @cached_property
    def namespaces(self) -> tuple[Namespace, ...]:
        return tuple(self._by_kind.get(Kind.NAMESPACE, ()))  # type: ignore[arg-type]

    @cached_property
    def mesh(self) -> MeshConfig:
        """--mesh-config file if given, else ConfigMap `istio` in the root namespace, else defaults."""
        meshes: list[MeshConfig] = self._by_kind.get(Kind.MESH_CONFIG, [])  # type: ignore[assignment]
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
        out: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            out[pod.meta.namespace].append(pod)
        return out

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
        return {}

    def pods_selected(self, namespace: str, selector: Mapping[str, str]) -> list[Pod]:
        """Pods in namespace whose labels include selector (memoised per view)."""
        key = (namespace, frozenset(selector.items()))
        found = self._selected.get(key)
        if found is None:
            items = key[1]
            found = [p for p in self.pods_in(namespace) if items <= p.meta.labels.items()]
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
