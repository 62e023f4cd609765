"""The hand-joined response bytes parse as the real messages, with every field in place."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse, DiscoveryResponse
from hypothesis import given
from hypothesis import strategies as st

from tests.support.resources import eds_cluster
from xds_server.resources import Built, TypeUrl, content_version
from xds_server.xds import wire


def test_sotw_response_parses_as_discovery_response() -> None:
    a, b = eds_cluster("a"), eds_cluster("b")
    raw = wire.sotw_response(TypeUrl.CLUSTER, "v1", "7", [a.sotw_entry, b.sotw_entry], wire.control_plane("me"))
    msg = DiscoveryResponse.FromString(raw)
    assert (msg.version_info, msg.type_url, msg.nonce) == ("v1", TypeUrl.CLUSTER, "7")
    assert msg.control_plane.identifier == "me"
    clusters = [cluster_pb2.Cluster.FromString(r.value) for r in msg.resources]
    assert [c.name for c in clusters] == ["a", "b"]
    assert all(r.type_url == TypeUrl.CLUSTER for r in msg.resources)


def test_delta_response_parses_with_versions_and_removals() -> None:
    a = eds_cluster("a")
    raw = wire.delta_response(TypeUrl.CLUSTER, "3", [a.delta_entry], ["gone", "also-gone"], "sys")
    msg = DeltaDiscoveryResponse.FromString(raw)
    assert msg.nonce == "3" and msg.system_version_info == "sys" and msg.type_url == TypeUrl.CLUSTER
    assert list(msg.removed_resources) == ["gone", "also-gone"]
    (res,) = msg.resources
    assert res.name == "a" and res.version == a.version
    assert res.resource.type_url == TypeUrl.CLUSTER and res.resource.value == a.payload


@given(name=st.text(min_size=1, max_size=300), payload=st.binary(max_size=70_000))
def test_entries_round_trip_any_name_and_size(name: str, payload: bytes) -> None:
    b = Built(TypeUrl.ROUTE, name, payload)
    msg = DeltaDiscoveryResponse.FromString(wire.delta_response(TypeUrl.ROUTE, "1", [b.delta_entry]))
    assert msg.resources[0].name == name and msg.resources[0].resource.value == payload
    sotw = DiscoveryResponse.FromString(wire.sotw_response(TypeUrl.ROUTE, "v", "1", [b.sotw_entry]))
    assert sotw.resources[0].value == payload


def test_versions_are_content_hashes_stable_across_builds() -> None:
    assert eds_cluster("a").version == eds_cluster("a").version == content_version(eds_cluster("a").payload)
    assert eds_cluster("a").version != eds_cluster("a", 2).version
