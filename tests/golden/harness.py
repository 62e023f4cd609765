"""Golden cases: render a case directory through `render_snapshot` and compare with expected.json.

A case is `tests/golden/<case>/` with `input/*.yaml`, `proxy.txt` (POD.NAMESPACE on the first
line, then optional KEY=VALUE metadata lines, `#` comments allowed) and `expected.json` (the
`xds-server render --type all` output). UPDATE_GOLDEN=1 rewrites expected.json; review the diff.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from tests.support.certs import TestCA
from xds_server.commands.bootstrap import parse_metadata
from xds_server.commands.render import render_snapshot, to_json
from xds_server.resources import Built, ProxySnapshot, ResourceMap, TypeUrl

ROOT = Path(__file__).parent
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


@dataclass(frozen=True)
class Case:
    name: str
    path: Path

    @property
    def proxy_lines(self) -> list[str]:
        lines = (self.path / "proxy.txt").read_text().splitlines()
        return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]

    @property
    def proxy(self) -> str:
        return self.proxy_lines[0]

    @property
    def metadata(self) -> dict[str, Any]:
        return parse_metadata(self.proxy_lines[1:])

    @property
    def mesh_config(self) -> str | None:
        mesh = self.path / "mesh.yaml"
        return str(mesh) if mesh.exists() else None

    def render(self) -> ProxySnapshot:
        return render_snapshot(str(self.path / "input"), self.proxy, self.metadata, mesh_config=self.mesh_config)


def cases() -> list[Case]:
    return [Case(p.name, p) for p in sorted(ROOT.iterdir()) if (p / "proxy.txt").exists()]


def dump_text(snapshot: ProxySnapshot) -> str:
    return to_json(snapshot)


# ------------------------------------------------------------------ static bootstrap for Envoy
def _inline_routes(listener: listener_pb2.Listener, routes: dict[str, route_pb2.RouteConfiguration]) -> None:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url != HCM_TYPE:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            f.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                name = hcm.rds.route_config_name
                route = routes.get(name) or route_pb2.RouteConfiguration(name=name)
                hcm.ClearField("rds")
                hcm.route_config.CopyFrom(route)
                f.typed_config.Pack(hcm)


def static_bootstrap(snapshot: ProxySnapshot, node_id: str = "sidecar~10.0.0.1~x.default~default.svc.cluster.local",
                     ) -> dict[str, Any]:
    """The snapshot as static resources: EDS clusters get their assignment inline, RDS goes inline."""
    cla = {}
    for name, built in snapshot.get(TypeUrl.ENDPOINT).items():
        msg = endpoint_pb2.ClusterLoadAssignment()
        msg.ParseFromString(built.payload)
        cla[name] = msg
    routes = {}
    for name, built in snapshot.get(TypeUrl.ROUTE).items():
        msg = route_pb2.RouteConfiguration()
        msg.ParseFromString(built.payload)
        routes[name] = msg
    clusters = []
    for built in snapshot.get(TypeUrl.CLUSTER).values():
        c = cluster_pb2.Cluster()
        c.ParseFromString(built.payload)
        if c.type == cluster_pb2.Cluster.EDS:
            service = c.eds_cluster_config.service_name or c.name
            c.ClearField("eds_cluster_config")
            c.type = cluster_pb2.Cluster.STATIC
            c.load_assignment.CopyFrom(cla.get(service) or endpoint_pb2.ClusterLoadAssignment(cluster_name=c.name))
        clusters.append(json_format.MessageToDict(c, preserving_proto_field_name=True))
    listeners = []
    for built in snapshot.get(TypeUrl.LISTENER).values():
        lis = listener_pb2.Listener()
        lis.ParseFromString(built.payload)
        _inline_routes(lis, routes)
        listeners.append(json_format.MessageToDict(lis, preserving_proto_field_name=True))
    return {
        "node": {"id": node_id, "cluster": "golden"},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# ------------------------------------------------------------------ TLS files for a real Envoy
# DataSource fields of TLS contexts that Envoy loads from `filename` (when validating, and when a
# resource arrives over xDS): a real Envoy needs real files there, so tests point them at test
# certificates. Paths aside, the configuration is what the golden holds.
_TLS_FILES = ("trusted_ca", "crl", "certificate_chain", "private_key")
_MESSAGES: dict[TypeUrl, type[Message]] = {
    TypeUrl.CLUSTER: cluster_pb2.Cluster, TypeUrl.LISTENER: listener_pb2.Listener}


class RealTlsFiles:
    """Test certificate files (made on first use, once) standing in for the paths configs name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._made: dict[str, str] = {}

    def _file(self, kind: str) -> str:
        if not self._made:
            ca = TestCA(self.directory / "tls")
            leaf = ca.issue("leaf", dns=("leaf.example",), server=True)
            self._made.update(trusted_ca=ca.path, crl=ca.crl(), certificate_chain=leaf.cert_path,
                              private_key=leaf.key_path)
        return self._made[kind]

    def rewrite(self, node: Any) -> Any:
        """A JSON-shaped config with every TLS file path replaced."""
        if isinstance(node, dict):
            return {key: ({**value, "filename": self._file(key)}
                          if key in _TLS_FILES and isinstance(value, dict) and "filename" in value
                          else self.rewrite(value))
                    for key, value in node.items()}
        if isinstance(node, list):
            return [self.rewrite(v) for v in node]
        return node

    def snapshot(self, snapshot: ProxySnapshot) -> ProxySnapshot:
        """`snapshot` with the clusters and listeners that name TLS files re-made with real ones."""
        out: dict[TypeUrl, ResourceMap] = {}
        for type_url in TypeUrl:
            builts = []
            for built in snapshot.get(type_url).values():
                message_type = _MESSAGES.get(type_url)
                if message_type is not None:
                    as_dict = json_format.MessageToDict(message_type.FromString(built.payload),
                                                        preserving_proto_field_name=True)
                    fixed = self.rewrite(as_dict)
                    if fixed != as_dict:
                        built = Built.of(type_url, built.name, json_format.ParseDict(fixed, message_type()),
                                         refs=built.refs)
                builts.append(built)
            out[type_url] = ResourceMap(builts)
        return ProxySnapshot(out)
