"""The YAML examples of the Istio documents the project started from (tests/fixtures/manifests/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xds_server.config import IstioServiceEntry, IstioSidecar, IstioVirtualService, Service
from xds_server.config.mesh_parse import parse_mesh_config
from xds_server.config.parse import parse

MANIFESTS = Path(__file__).parents[2] / "fixtures" / "manifests"
SEEDS = sorted((MANIFESTS / "seeds").glob("*/*.yaml"))
EGRESS_TASK = MANIFESTS / "egress-task"


def parse_file(path: Path) -> list[tuple[object, list[object]]]:
    return [parse(d, f"{path.name}:{i}") for i, d in enumerate(yaml.safe_load_all(path.read_text())) if d]


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sidecar_reference_examples_parse_clean(path: Path) -> None:
    results = parse_file(path)
    assert results
    for _obj, problems in results:
        assert problems == []
    assert isinstance(results[0][0], IstioSidecar | IstioServiceEntry)


def test_all_three_api_versions_of_the_reference_are_covered() -> None:
    assert {p.parent.name for p in SEEDS} == {"v1", "v1beta1", "v1alpha3"}


def test_ratings_tls_example_carries_its_service_and_skips_peer_authentication() -> None:
    results = parse_file(MANIFESTS / "seeds" / "v1" / "sidecar-ratings-tls.yaml")
    sidecar, service, peer_auth = (obj for obj, _ in results)
    assert (
        isinstance(sidecar, IstioSidecar)
        and sidecar.spec.ingress[0].tls.private_key == "/etc/certs/privatekey.pem"
    )
    assert isinstance(service, Service) and service.meta.namespace == "default"
    assert service.ports[0].target_port == 80
    assert peer_auth is None


@pytest.mark.parametrize(
    "name", ["serviceentry-httpbin.yaml", "serviceentry-google.yaml", "configmap-istio.yaml"]
)
def test_egress_task_examples_parse_clean(name: str) -> None:
    ((obj, problems),) = parse_file(EGRESS_TASK / name)
    assert obj is not None and problems == []


def test_egress_task_virtual_service_parses_with_its_timeout() -> None:
    ((obj, problems),) = parse_file(EGRESS_TASK / "virtualservice-httpbin.yaml")
    assert problems == []
    assert isinstance(obj, IstioVirtualService) and obj.meta.namespace == "default"
    (rule,) = obj.spec.http
    assert rule.timeout.ToTimedelta().total_seconds() == 3.0
    (route,) = rule.route
    assert (route.destination.host, route.weight) == ("httpbin.org", 100)


def test_egress_task_gateway_api_route_is_skipped_silently() -> None:
    assert parse_file(EGRESS_TASK / "httproute-httpbin.yaml") == [(None, [])]


def test_egress_task_registry_only_mesh_config() -> None:
    mesh, problems = parse_mesh_config((EGRESS_TASK / "mesh-registry-only.yaml").read_text())
    assert problems == [] and mesh is not None and mesh.outbound_traffic_policy == "REGISTRY_ONLY"


INVALID = {
    "sidecar-egress-host-without-namespace.yaml": [
        "sidecar-egress-host-without-namespace.yaml:0: Sidecar/prod-us1/no-ip-tables: "
        "spec.egress[0].hosts[0]: host 'mysql.foo.com' must be of the form namespace/dnsName"
    ],
    "sidecar-typo-and-bad-values.yaml": [
        "sidecar-typo-and-bad-values.yaml:0: Sidecar/prod-us1/typo: spec.egress[0].port.numbr: unknown field",
        "sidecar-typo-and-bad-values.yaml:1: Sidecar/prod-us1/bad-ingress: spec.ingress[0].bind: "
        "unix domain sockets are not allowed for ingress listeners",
        "sidecar-typo-and-bad-values.yaml:1: Sidecar/prod-us1/bad-ingress: spec.ingress[0].defaultEndpoint: "
        "'10.0.0.1:8080' must be of the form 127.0.0.1:PORT, [::1]:PORT, 0.0.0.0:PORT, [::]:PORT or unix:///path",
    ],
    "serviceentry-mixed.yaml": [
        "serviceentry-mixed.yaml:1: ServiceEntry/egress/wildcard-dns: spec.hosts[0]: "
        "must be an FQDN (no wildcard) with resolution DNS and no endpoints"
    ],
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_broken_variants_of_the_examples_are_flagged(name: str) -> None:
    results = parse_file(MANIFESTS / "invalid" / name)
    assert [str(p) for _, problems in results for p in problems] == INVALID[name]
