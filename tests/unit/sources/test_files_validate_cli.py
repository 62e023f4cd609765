"""`xds-server validate PATH...` as a user runs it: exact output lines and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MANIFESTS = Path(__file__).parents[2] / "fixtures" / "manifests"
ROOT = Path(__file__).parents[3]


def validate(*paths: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xds_server", "validate", *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_valid_examples_print_nothing_and_exit_0() -> None:
    for version in ("v1alpha3", "v1beta1"):
        result = validate(MANIFESTS / "seeds" / version)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_each_problem_is_one_line_and_errors_exit_1(tmp_path: Path) -> None:
    result = validate("tests/fixtures/manifests/invalid")
    where = "tests/fixtures/manifests/invalid"
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{where}/not-yaml.yaml:0: invalid YAML: did not find expected ',' or ']' (line 6, column 1) "
        "while parsing a flow sequence (line 5, column 17)",
        f"{where}/serviceentry-mixed.yaml:1: ServiceEntry/egress/wildcard-dns: spec.hosts[0]: "
        "must be an FQDN (no wildcard) with resolution DNS and no endpoints",
        f"{where}/sidecar-egress-host-without-namespace.yaml:0: Sidecar/prod-us1/no-ip-tables: "
        "spec.egress[0].hosts[0]: host 'mysql.foo.com' must be of the form namespace/dnsName",
        f"{where}/sidecar-typo-and-bad-values.yaml:0: Sidecar/prod-us1/typo: "
        "spec.egress[0].port.numbr: unknown field",
        f"{where}/sidecar-typo-and-bad-values.yaml:1: Sidecar/prod-us1/bad-ingress: spec.ingress[0].bind: "
        "unix domain sockets are not allowed for ingress listeners",
        f"{where}/sidecar-typo-and-bad-values.yaml:1: Sidecar/prod-us1/bad-ingress: "
        "spec.ingress[0].defaultEndpoint: '10.0.0.1:8080' must be of the form "
        "127.0.0.1:PORT, [::1]:PORT, 0.0.0.0:PORT, [::]:PORT or unix:///path",
    ]


def test_warnings_are_marked_and_do_not_fail(tmp_path: Path) -> None:
    assert (validate("tests/fixtures/manifests/egress-task").returncode,
            validate("tests/fixtures/manifests/egress-task").stdout) == (0, "")  # the seed 004 VS: translated
    (tmp_path / "dr.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: shop}\n"
        "spec: {host: reviews, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n")
    result = validate(tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{tmp_path}/dr.yaml:0: warning: DestinationRule/shop/r: spec.trafficPolicy.tls.mode: ISTIO_MUTUAL needs "
        "Istio's mesh mTLS (its CA and agent), which does not exist in xds-server: connections for this policy "
        "stay plaintext"]


def test_files_and_directories_mix(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: n}\nspec: {ports: [{port: 0}]}\n"
    )
    result = validate(MANIFESTS / "seeds" / "v1" / "serviceentry-mysql.yaml", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path}/sub/bad.yaml:0: Service/n/s: "
        "spec.ports[0].port: port number 0 must be in the range 1..65535"
    ]


def test_a_bare_mesh_config_file_is_checked_as_a_mesh_config(tmp_path: Path) -> None:
    assert validate(MANIFESTS / "egress-task" / "mesh-registry-only.yaml").stdout == ""
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("outboundTrafficPolicy:\n  mode: BLOCK\n")
    result = validate(mesh)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{mesh}:0: MeshConfig/mesh-config-file: outboundTrafficPolicy.mode: unknown value 'BLOCK' "
        "(one of REGISTRY_ONLY, ALLOW_ANY)"
    ]


def test_duplicate_selectorless_sidecars_warn(tmp_path: Path) -> None:
    sc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {}, namespace: n}}\n"
    sc += "spec: {{egress: [{{hosts: ['./*']}}]}}\n"
    (tmp_path / "a.yaml").write_text(sc.format("a") + "---\n" + sc.format("b"))
    result = validate(tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{tmp_path}/a.yaml:1: warning: Sidecar/n/b: spec.workloadSelector: not set, and Sidecar/n/a (older) "
        "already applies to namespace n; this Sidecar is ignored"
    ]


def test_unsupported_fields_are_reported_as_warnings(tmp_path: Path) -> None:
    (tmp_path / "se.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e, namespace: n}\n"
        "spec: {hosts: [a.example.com], ports: [{number: 443, name: tls, protocol: TLS}], resolution: DNS,\n"
        "       subjectAltNames: [spiffe://a]}\n"
    )
    result = validate(tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(
        f"{tmp_path}/se.yaml:0: warning: ServiceEntry/n/e: spec.subjectAltNames: "
    )


def test_unreadable_path_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = validate(missing)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"xds-server validate: cannot read {missing}: No such file or directory"


def test_traffic_management_kinds_print_field_paths_and_warnings(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: r, namespace: shop}\n"
        "spec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {regex: '(?<=x)'}}]\n"
        "    route: [{destination: {host: reviews, subset: v1}}]\n"
        "---\n"
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: r, namespace: shop}\n"
        "spec: {host: reviews, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, subsets: [{name: v1}, {name: v1}]}\n"
        "---\n"
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ok, namespace: shop}\n"
        "spec: {host: ratings, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n"
    )
    result = validate(tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path}/vs.yaml:0: VirtualService/shop/r: spec.http[0].match[0].uri.regex: invalid regex '(?<=x)': "
        "invalid perl operator: (?<= (Envoy uses RE2 syntax, https://github.com/google/re2/wiki/Syntax)",
        f"{tmp_path}/vs.yaml:1: warning: DestinationRule/shop/r: spec.trafficPolicy.tls.mode: ISTIO_MUTUAL needs "
        "Istio's mesh mTLS (its CA and agent), which does not exist in xds-server: connections for this policy "
        "stay plaintext",
        f"{tmp_path}/vs.yaml:1: DestinationRule/shop/r: spec.subsets[1].name: duplicate subset names: v1",
        f"{tmp_path}/vs.yaml:2: warning: DestinationRule/shop/ok: spec.trafficPolicy.tls.mode: ISTIO_MUTUAL needs "
        "Istio's mesh mTLS (its CA and agent), which does not exist in xds-server: connections for this policy "
        "stay plaintext",
    ]


def test_seed_002_inbound_tls_validates_and_tls_with_inbound_tls_is_a_conflict(tmp_path: Path) -> None:
    """Issue 16 deliverable 6 as a user sees it: the seed's Sidecar (with its PeerAuthentication,
    a kind xds-server does not read) and DestinationRule pass, with the renaming notice only."""
    seed = "tests/fixtures/manifests/seed-inbound-tls"
    result = validate(seed)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"{seed}/sidecar-ratings-inbound-tls.yaml:0: warning: Sidecar/prod-us1/ratings: spec.ingress[1].inboundTls: "
        "read as this listener's tls (later editions of the Sidecar API name the field tls)"]
    tls = "    tls: {mode: SIMPLE, serverCertificate: /a.pem, privateKey: /b.pem}\n"
    both = (MANIFESTS / "seed-inbound-tls" / "sidecar-ratings-inbound-tls.yaml").read_text().replace(
        "    inboundTls:\n", tls + "    inboundTls:\n")
    (tmp_path / "sidecar.yaml").write_text(both)
    result = validate(tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path}/sidecar.yaml:0: Sidecar/prod-us1/ratings: spec.ingress[1].inboundTls: conflicts with tls on the "
        "same listener (inboundTls is the 2020 name of tls; set one)"]
