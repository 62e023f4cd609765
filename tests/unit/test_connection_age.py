"""`--max-connection-age` and its grace reach gRPC as the channel args istiod's keepalive options map to."""

from __future__ import annotations

from xds_server.app import grpc_options
from xds_server.cli import build_parser
from xds_server.commands.serve import check, settings_from_args
from xds_server.settings import Settings


def parse(*flags: str) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", "--config-dir", ".", *flags]))


def test_age_and_grace_become_grpc_channel_args() -> None:
    s = parse("--max-connection-age", "1800", "--max-connection-age-grace", "2.5")
    opts = dict(grpc_options(s))
    # gRPC core adds the +-10 % jitter to the age itself (kMaxConnectionAgeJitter).
    assert opts["grpc.max_connection_age_ms"] == 1_800_000
    assert opts["grpc.max_connection_age_grace_ms"] == 2_500


def test_grace_defaults_to_istiods_ten_seconds_and_age_is_off_by_default() -> None:
    assert parse().max_connection_age_grace == 10.0
    assert "grpc.max_connection_age_ms" not in dict(grpc_options(parse()))
    assert dict(grpc_options(parse("--max-connection-age", "60")))["grpc.max_connection_age_grace_ms"] == 10_000


def test_negative_values_are_refused() -> None:
    assert check(parse("--max-connection-age", "60")) is None
    assert "--max-connection-age-grace" in (check(parse("--max-connection-age-grace", "-1")) or "")
    assert "--max-connection-age" in (check(parse("--max-connection-age", "-5")) or "")


def test_no_bdp_probing_of_the_clients_requests() -> None:
    # Every request received would otherwise cost a PING and its ACK (app.py says why it is off).
    assert dict(grpc_options(parse()))["grpc.http2.bdp_probe"] == 0
