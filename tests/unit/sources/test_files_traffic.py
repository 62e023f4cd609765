"""VirtualService and DestinationRule through the file source into a real Store: served, rejected
alone with field paths (the last good version kept), shown in configz."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.unit.sources.test_files import eventually, running  # noqa: F401 - the fixture
from xds_server.admin import debug
from xds_server.config import IstioVirtualService, Kind, ObjectRef

VS = ObjectRef(Kind.VIRTUAL_SERVICE, "ns", "httpbin")
DR = ObjectRef(Kind.DESTINATION_RULE, "ns", "reviews")


def virtual_service(timeout: str = "3s", weight: int = 100) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: httpbin, namespace: ns}\n"
        f"spec: {{hosts: [httpbin.org], http: [{{timeout: {timeout}, "
        f"route: [{{destination: {{host: httpbin.org}}, weight: {weight}}}]}}]}}\n"
    )


def destination_rule() -> str:
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
        "metadata: {name: reviews, namespace: ns}\n"
        "spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}\n"
    )


def timeout_of(store: object) -> int:
    obj = store.get(VS)  # type: ignore[attr-defined]
    assert isinstance(obj, IstioVirtualService)
    return int(obj.spec.http[0].timeout.seconds)


async def test_an_invalid_virtual_service_is_rejected_alone_and_the_good_version_kept(
    tmp_path: Path, running, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    (tmp_path / "vs.yaml").write_text(virtual_service())
    (tmp_path / "dr.yaml").write_text(destination_rule())
    r = await running(rescan_interval=60).start()
    assert {VS, DR} <= r.refs() and timeout_of(r.store) == 3
    (tmp_path / "vs.yaml").write_text(virtual_service(timeout="4s", weight=-5))
    await eventually(lambda: str(tmp_path / "vs.yaml") in r.store.problems, "problem reported")
    (problem,) = r.store.problems[str(tmp_path / "vs.yaml")]
    assert str(problem) == (
        f"{tmp_path}/vs.yaml:0: VirtualService/ns/httpbin: spec.http[0].route[0].weight: weight -5 < 0")
    assert timeout_of(r.store) == 3 and DR in r.refs()
    logged = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any("rejected:" in m and "spec.http[0].route[0].weight: weight -5 < 0" in m and "keeping the previous"
               in m for m in logged)
    (tmp_path / "vs.yaml").write_text(virtual_service(timeout="5s"))
    await eventually(lambda: timeout_of(r.store) == 5, "fixed version served")
    assert not [rec for rec in caplog.records if "not translated" in rec.getMessage()]  # they are now
    body = debug.configz(r.store)
    assert body["counts"]["VirtualService"] == 1 and body["counts"]["DestinationRule"] == 1
    (entry,) = [o for o in body["objects"] if o["kind"] == "VirtualService"]
    assert entry == {"kind": "VirtualService", "namespace": "ns", "name": "httpbin",
                     "origin": str(tmp_path / "vs.yaml")}
    assert body["traffic"]["virtual_services"] == [
        {"virtual_service": "VirtualService/ns/httpbin", "hosts": ["httpbin.org"], "export_to": ["*"],
         "delegates": []}]


async def test_an_invalid_destination_rule_is_rejected_alone_and_the_good_version_kept(
    tmp_path: Path, running  # noqa: F811
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "both.yaml").write_text(virtual_service() + "---\n" + destination_rule())
    r = await running(rescan_interval=60).start()
    good = r.store.get(DR)
    assert good is not None
    broken = destination_rule().replace("subsets: [{name: v1, labels: {version: v1}}]",
                                        "subsets: [{name: v1}, {name: v1}]")
    (tmp_path / "both.yaml").write_text(virtual_service(timeout="7s") + "---\n" + broken)
    await eventually(lambda: timeout_of(r.store) == 7, "the valid VirtualService next to it updated")
    (problem,) = r.store.problems[str(tmp_path / "both.yaml")]
    assert str(problem) == (
        f"{tmp_path}/both.yaml:1: DestinationRule/ns/reviews: spec.subsets[1].name: duplicate subset names: v1")
    assert r.store.get(DR) is good
