"""Which VirtualServices a sidecar sees, and how one host's routing is chosen (istiod's
pilot/pkg/model/virtualservice.go, push_context.go `initVirtualServices`, sidecar.go).

Pure functions over config objects, computed once per store generation and shared by every proxy:
- `resolve_virtual_service`: short names become `<name>.<VS namespace>.svc.<domain>` (the VS's
  namespace, never the service's) in hosts and every destination and mirror; gateway names
  without `/` become `<VS namespace>/<name>`; exportTo with the mesh default;
- `index_virtual_services`: delegates (no hosts) are folded into the HTTP rules of the roots
  that name them, one level only (`mergeVirtualServicesIfNeeded`); the roots bound to the `mesh`
  gateway are indexed public / private to their namespace / exported to another namespace,
  oldest first;
- `select_virtual_services`: for one egress listener, the candidates of the proxy's namespace
  (private, exported, public) any of whose hosts matches the listener's imports for the VS's own
  namespace or `*/` (`SelectVirtualServices`);
- `virtual_service_for_host`: istiod does not merge VirtualServices for sidecars; the most
  specific VS host wins, then the earlier candidate, and the others are shadowed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioVirtualService, ObjectRef
from xds_server.config.hostname import matches, more_specific, subset_of
from xds_server.config.mesh import MeshConfig
from xds_server.mesh.exports import ExportTo, resolve_export_to
from xds_server.mesh.host_imports import WILDCARD_NAMESPACE, HostImports

MESH_GATEWAY = "mesh"


def resolve_host(host: str, namespace: str, domain_suffix: str) -> str:
    """istio `ResolveShortnameToFQDN`: a name without a dot is short for a Service of `namespace`."""
    if "." in host or host == "*" or host == "":
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def resolve_gateway(name: str, namespace: str) -> str:
    """istio `resolveGatewayName`: `mesh`, `ns/name`, legacy `name.ns`, or a name in `namespace`."""
    if name == MESH_GATEWAY or "/" in name:
        return name
    if "." in name:
        parts = name.split(".")
        return f"{parts[1]}/{parts[0]}"
    return f"{namespace}/{name}"


@dataclass(frozen=True, slots=True, eq=False)
class ResolvedVirtualService:
    """A VirtualService with names resolved; `spec` is a private copy (treat as read-only)."""

    source: IstioVirtualService
    spec: pb.VirtualService
    gateways: frozenset[str]
    export_to: ExportTo
    delegates: tuple[ObjectRef, ...] = ()  # delegate VirtualServices merged into `spec.http`

    @property
    def ref(self) -> ObjectRef:
        return self.source.ref

    @property
    def namespace(self) -> str:
        return self.source.meta.namespace

    @property
    def is_delegate(self) -> bool:
        return not self.spec.hosts

    @property
    def age(self) -> tuple[str, str, str]:
        """istio `sortConfigByCreationTime`: oldest first, then name, then namespace."""
        meta = self.source.meta
        return meta.creation_timestamp, meta.name, meta.namespace


def resolve_virtual_service(vs: IstioVirtualService, mesh: MeshConfig, domain_suffix: str) -> ResolvedVirtualService:
    namespace = vs.meta.namespace
    spec = pb.VirtualService()
    spec.CopyFrom(vs.spec)
    spec.hosts[:] = [resolve_host(h, namespace, domain_suffix) for h in spec.hosts]
    for dest in destinations(spec):
        dest.host = resolve_host(dest.host, namespace, domain_suffix)
    gateways = frozenset(resolve_gateway(g, namespace) for g in spec.gateways) or frozenset({MESH_GATEWAY})
    export_to = resolve_export_to(list(spec.export_to), namespace, mesh.default_virtual_service_export_to)
    return ResolvedVirtualService(vs, spec, gateways, export_to)


def destinations(spec: pb.VirtualService, source_namespace: str | None = None) -> Iterable[pb.Destination]:
    """Every destination and mirror of a VirtualService's http, tcp and tls routes. With a
    `source_namespace`, an HTTP rule whose matches all name other source namespaces is skipped."""
    for http in spec.http:
        if source_namespace is not None:
            sources = {m.source_namespace for m in http.match if m.source_namespace}
            if sources and source_namespace not in sources:
                continue
        yield from (rd.destination for rd in http.route if rd.HasField("destination"))
        if http.HasField("mirror"):
            yield http.mirror
        yield from (m.destination for m in http.mirrors if m.HasField("destination"))
    for tcp in spec.tcp:
        yield from (rd.destination for rd in tcp.route if rd.HasField("destination"))
    for tls in spec.tls:
        yield from (rd.destination for rd in tls.route if rd.HasField("destination"))


# ---------------------------------------------------------------- delegates
def delegate_key(http: pb.HTTPRoute, namespace: str) -> tuple[str, str] | None:
    """The (namespace, name) of the delegate an HTTP rule of a VirtualService in `namespace`
    names (istio `mergeVirtualServicesIfNeeded`: an empty namespace is the root's), else None."""
    if not http.HasField("delegate"):
        return None
    return http.delegate.namespace or namespace, http.delegate.name


def delegate_keys(vs: ResolvedVirtualService) -> Iterator[tuple[str, str]]:
    """The delegates a root names as written, in rule order, found or not (its `spec` has them
    merged away: `merge_delegates`)."""
    for http in vs.source.spec.http:
        key = delegate_key(http, vs.namespace)
        if key is not None:
            yield key

def merge_delegates(
    root: ResolvedVirtualService, delegates: Mapping[tuple[str, str], ResolvedVirtualService]
) -> ResolvedVirtualService:
    """istio `mergeVirtualServicesIfNeeded`: each root rule with `delegate` becomes the delegate's
    rules merged with it; a missing delegate, one not exported to the root's namespace, or a
    delegate rule whose matches conflict with the root's, is dropped."""
    if not any(http.HasField("delegate") for http in root.spec.http):
        return root
    spec = pb.VirtualService()
    spec.CopyFrom(root.spec)
    del spec.http[:]
    used: list[ObjectRef] = []
    for http in root.spec.http:
        key = delegate_key(http, root.namespace)
        if key is None:
            spec.http.add().CopyFrom(http)
            continue
        delegate = delegates.get(key)
        if delegate is None or not delegate.export_to.visible_in(root.namespace):
            continue
        used.append(delegate.ref)
        for leaf in delegate.spec.http:
            merged = merge_http_route(http, leaf)
            if merged is not None:
                spec.http.add().CopyFrom(merged)
    return ResolvedVirtualService(root.source, spec, root.gateways, root.export_to, tuple(dict.fromkeys(used)))


_INHERITED = ("rewrite", "direct_response", "timeout", "retries", "fault", "mirror", "mirror_percent",
              "mirror_percentage", "cors_policy", "headers")


def merge_http_route(root: pb.HTTPRoute, leaf: pb.HTTPRoute) -> pb.HTTPRoute | None:
    """istio `mergeHTTPRoute`: the leaf's matches inside the root's, unset fields from the root."""
    matches_, conflict = _merge_matches(list(root.match), list(leaf.match))
    if conflict:
        return None
    out = pb.HTTPRoute()
    out.CopyFrom(leaf)
    del out.match[:]
    out.match.extend(matches_)
    if not leaf.name:
        out.name = root.name
    elif root.name:
        out.name = f"{root.name}-{leaf.name}"
    for field in _INHERITED:
        if leaf.HasField(field) or not root.HasField(field):
            continue
        if field == "mirror_percent":  # a scalar with presence, not a message
            out.mirror_percent = root.mirror_percent
        else:
            getattr(out, field).CopyFrom(getattr(root, field))
    if not leaf.mirrors and root.mirrors:
        out.mirrors.extend(root.mirrors)
    return out


def _merge_matches(
    root: list[pb.HTTPMatchRequest], leaf: list[pb.HTTPMatchRequest]
) -> tuple[list[pb.HTTPMatchRequest], bool]:
    if not root:
        return leaf, False
    if not leaf:
        return root, False
    out: list[pb.HTTPMatchRequest] = []
    for sub in leaf:
        found = False
        for parent in root:
            if has_conflict(parent, sub):
                continue
            out.append(_merge_match(parent, sub))
            found = True
        if not found:
            return [], True
    return out, not out


def _merge_match(root: pb.HTTPMatchRequest, leaf: pb.HTTPMatchRequest) -> pb.HTTPMatchRequest:
    out = pb.HTTPMatchRequest()
    out.CopyFrom(leaf)
    if not leaf.name:
        out.name = root.name
    elif root.name:
        out.name = f"{root.name}-{leaf.name}"
    for field in ("uri", "scheme", "method", "authority"):
        if not leaf.HasField(field) and root.HasField(field):
            getattr(out, field).CopyFrom(getattr(root, field))
    for field in ("headers", "without_headers", "query_params"):
        merged = getattr(out, field)
        for key, value in getattr(root, field).items():
            if key not in getattr(leaf, field):
                merged[key].CopyFrom(value)
    for key, value in root.source_labels.items():
        if key not in leaf.source_labels:
            out.source_labels[key] = value
    if not out.port:
        out.port = root.port
    if not out.source_namespace:
        out.source_namespace = root.source_namespace
    if not out.gateways:
        out.gateways.extend(root.gateways)
    return out


def has_conflict(root: pb.HTTPMatchRequest, leaf: pb.HTTPMatchRequest) -> bool:
    """istio `hasConflict`: can `leaf` not be expressed inside `root`?"""
    for field in ("uri", "scheme", "method", "authority"):
        if not (root.HasField(field) and leaf.HasField(field)):
            continue
        if _string_conflict(getattr(root, field), getattr(leaf, field)):
            return True
    for field in ("headers", "without_headers", "query_params"):
        parents, leaves = getattr(root, field), getattr(leaf, field)
        for key, value in leaves.items():
            if key in parents and _string_conflict(parents[key], value):
                return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    if any(key in root.source_labels and root.source_labels[key] != v for key, v in leaf.source_labels.items()):
        return True
    if root.gateways and leaf.gateways:
        return len(root.gateways) < len(leaf.gateways) or not set(leaf.gateways) <= set(root.gateways)
    return False


def _string_conflict(root: pb.StringMatch, leaf: pb.StringMatch) -> bool:
    """istio `stringMatchConflict`: regex against anything conflicts; exact must be equal; a
    prefix or exact leaf must extend the root prefix."""
    root_kind, leaf_kind = root.WhichOneof("match_type"), leaf.WhichOneof("match_type")
    root_value = getattr(root, root_kind) if root_kind else ""
    leaf_value = getattr(leaf, leaf_kind) if leaf_kind else ""
    if root_kind == "regex" and root_value and leaf_value:
        return True
    if leaf_kind == "regex" and leaf_value and root_value:
        return True
    if root_kind == "exact" and root_value:
        return (leaf_kind == "prefix" and bool(leaf_value)) or leaf.exact != root_value
    if root_kind == "prefix" and root_value:
        if leaf_kind == "prefix" and leaf_value:
            return not leaf_value.startswith(root_value)
        if leaf_kind == "exact" and leaf_value:
            return not leaf_value.startswith(root_value)
    return True


# ---------------------------------------------------------------- index and selection
@dataclass(frozen=True, slots=True)
class VirtualServiceIndex:
    """The `mesh` gateway's VirtualServices by visibility, each list oldest first."""

    public: tuple[ResolvedVirtualService, ...]
    private: Mapping[str, tuple[ResolvedVirtualService, ...]]  # visible in their own namespace
    exported: Mapping[str, tuple[ResolvedVirtualService, ...]]  # exported to another namespace
    delegates: Mapping[tuple[str, str], ResolvedVirtualService]

    def candidates(self, namespace: str) -> tuple[ResolvedVirtualService, ...]:
        """istiod's order for a proxy in `namespace`: private, exported to it, public."""
        return (*self.private.get(namespace, ()), *self.exported.get(namespace, ()), *self.public)

    def roots(self) -> tuple[ResolvedVirtualService, ...]:
        """Every root VirtualService once (delegates merged in), however many namespaces see it."""
        seen: dict[ObjectRef, ResolvedVirtualService] = {}
        for vs in (vs for listed in (self.public, *self.private.values(), *self.exported.values()) for vs in listed):
            seen.setdefault(vs.ref, vs)
        return tuple(seen.values())

    def roots_of(self, delegate: ObjectRef) -> tuple[ObjectRef, ...]:
        """The roots a delegate is merged into (a delegate change reaches proxies through them)."""
        seen: dict[ObjectRef, None] = {}
        lists = (self.public, *self.private.values(), *self.exported.values())
        for vs in (vs for listed in lists for vs in listed):
            if delegate in vs.delegates:
                seen[vs.ref] = None
        return tuple(seen)


def index_virtual_services(
    objects: Iterable[IstioVirtualService], mesh: MeshConfig, domain_suffix: str = "cluster.local"
) -> VirtualServiceIndex:
    resolved = sorted((resolve_virtual_service(vs, mesh, domain_suffix) for vs in objects), key=lambda r: r.age)
    delegates = {(r.namespace, r.ref.name): r for r in resolved if r.is_delegate}
    public: list[ResolvedVirtualService] = []
    private: dict[str, list[ResolvedVirtualService]] = defaultdict(list)
    exported: dict[str, list[ResolvedVirtualService]] = defaultdict(list)
    for vs in resolved:
        if vs.is_delegate or MESH_GATEWAY not in vs.gateways:
            continue
        vs = merge_delegates(vs, delegates)
        if vs.export_to.public:
            public.append(vs)
            continue
        for namespace in sorted(vs.export_to.namespaces):
            (private if namespace == vs.namespace else exported)[namespace].append(vs)
    return VirtualServiceIndex(
        tuple(public),
        {ns: tuple(v) for ns, v in private.items()},
        {ns: tuple(v) for ns, v in exported.items()},
        delegates,
    )


def select_virtual_services(
    index: VirtualServiceIndex, proxy_namespace: str, imports: HostImports
) -> tuple[ResolvedVirtualService, ...]:
    """One egress listener's VirtualServices: a candidate is kept when any of its hosts matches an
    import for the VS's own namespace or for `*/` (`Name.Matches`, either side may be a
    wildcard). Hosts hit by an exclusion (`~ns/host`) do not count."""
    out: dict[ObjectRef, ResolvedVirtualService] = {}
    for vs in index.candidates(proxy_namespace):
        if vs.ref in out:
            continue
        for namespace in (vs.namespace, WILDCARD_NAMESPACE):
            imported = imports.imports.get(namespace)
            if imported is not None and _imports_any(vs, imported, imports):
                out[vs.ref] = vs
                break
    return tuple(out.values())


def _imports_any(vs: ResolvedVirtualService, imported: Sequence[str], imports: HostImports) -> bool:
    excluded = (*imports.exclusions.get(vs.namespace, ()), *imports.exclusions.get(WILDCARD_NAMESPACE, ()))
    for host in vs.spec.hosts:
        if any(subset_of(host, ex) for ex in excluded):
            continue
        if any(host == h or matches(host, h) for h in imported):
            return True
    return False


@dataclass(frozen=True, slots=True)
class HostBinding:
    """The VirtualService that routes `hostname`, and the ones it shadows (istioctl IST0109)."""

    hostname: str
    virtual_service: ResolvedVirtualService
    vs_host: str  # the VS host that matched (exact, or the most specific wildcard)
    shadowed: tuple[ObjectRef, ...]


def virtual_service_for_host(selected: Sequence[ResolvedVirtualService], hostname: str) -> HostBinding | None:
    """istio `computeWildcardHostVirtualServiceIndex` + first-wins vhosts: the most specific VS
    host that covers `hostname` wins (exact beats wildcard, longer wildcard beats shorter), ties
    go to the earlier candidate; sidecars never merge two VirtualServices."""
    best: tuple[ResolvedVirtualService, str] | None = None
    others: list[ObjectRef] = []
    for vs in selected:
        hosts = [h for h in vs.spec.hosts if h.lower() == hostname.lower() or subset_of(hostname, h)]
        if not hosts:
            continue
        host = hosts[0]
        for h in hosts[1:]:
            if more_specific(h, host):
                host = h
        if best is None:
            best = (vs, host)
        elif more_specific(host, best[1]):
            others.append(best[0].ref)
            best = (vs, host)
        else:
            others.append(vs.ref)
    if best is None:
        return None
    return HostBinding(hostname, best[0], best[1], tuple(others))
