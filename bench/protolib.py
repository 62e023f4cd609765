"""Build + serialize cost of one typical Envoy resource, per protobuf library.

    python -m bench.protolib [--seconds 1]

Builds an outbound EDS Cluster the way `translate/clusters.py` does (EDS over ADS, circuit
breakers, explicit HTTP/2 upstream options packed in an Any, `istio` metadata) and an outbound
HTTP Listener (a filter chain with an HttpConnectionManager packed in an Any, RDS over ADS, four
HTTP filters), then serializes it, over and over with a fresh message each time (best of three
runs of about a second), and prints the microseconds per resource:

* with xds-protos (the `*_pb2` classes on protobuf's upb runtime) — what the server uses;
* with envoy-data-plane (2.x: betterproto2 pydantic dataclasses; 1.x: betterproto dataclasses)
  when it is importable. It is not a dependency of this project: to compare, install it in a
  throwaway venv together with xds-protos, e.g.
  `python3 -m venv /tmp/edp && /tmp/edp/bin/pip install envoy-data-plane xds-protos`, then run
  `/tmp/edp/bin/python -m bench.protolib` from the repository root.

Both variants are meant to produce the same message: the script compares them (packed Anys
expanded: field order on the wire may differ) and prints any difference before timing.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

MAX_UINT32 = 4294967295
HPO_URL = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_URL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HCM = "envoy.filters.network.http_connection_manager"
HTTP_FILTERS = (
    ("envoy.filters.http.grpc_stats", "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"),
    ("envoy.filters.http.fault", "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"),
    ("envoy.filters.http.cors", "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"),
    ("envoy.filters.http.router", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
)


def _names(i: int) -> tuple[str, str]:
    host = f"svc-{i}.ns-{i % 10}.svc.cluster.local"
    return host, f"outbound|8080||{host}"


# ------------------------------------------------------------------ xds-protos (upb)
def upb_cluster() -> Callable[[int], bytes]:
    from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
    from envoy.config.core.v3 import config_source_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
    from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

    def build(i: int) -> bytes:
        host, name = _names(i)
        u32 = wrappers_pb2.UInt32Value
        cluster = cluster_pb2.Cluster(
            name=name, type=cluster_pb2.Cluster.EDS, connect_timeout=duration_pb2.Duration(seconds=10),
            lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
            circuit_breakers=circuit_breaker_pb2.CircuitBreakers(thresholds=[circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections=u32(value=MAX_UINT32), max_pending_requests=u32(value=MAX_UINT32),
                max_requests=u32(value=MAX_UINT32), max_retries=u32(value=MAX_UINT32), track_remaining=True)]),
        )
        cluster.eds_cluster_config.service_name = name
        cluster.eds_cluster_config.eds_config.CopyFrom(config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(), initial_fetch_timeout=duration_pb2.Duration(),
            resource_api_version=config_source_pb2.V3))
        opts = hpo.HttpProtocolOptions()
        opts.explicit_http_config.http2_protocol_options.SetInParent()
        packed = any_pb2.Any()
        packed.Pack(opts)
        cluster.typed_extension_protocol_options[HPO_KEY].CopyFrom(packed)
        cluster.metadata.filter_metadata["istio"].update(
            {"services": [{"host": host, "name": f"svc-{i}", "namespace": f"ns-{i % 10}"}]})
        return cluster.SerializeToString(deterministic=True)

    return build


def upb_listener() -> Callable[[int], bytes]:
    from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
    from envoy.config.listener.v3 import listener_components_pb2 as lc
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
    from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

    def build(i: int) -> bytes:
        port = 8000 + i % 1000
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix=f"outbound_0.0.0.0_{port}", codec_type=hcm_pb2.HttpConnectionManager.AUTO,
            use_remote_address=wrappers_pb2.BoolValue(value=False), stream_idle_timeout=duration_pb2.Duration(),
            normalize_path=wrappers_pb2.BoolValue(value=True),
            upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
            rds=hcm_pb2.Rds(route_config_name=str(port), config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(), initial_fetch_timeout=duration_pb2.Duration(),
                resource_api_version=config_source_pb2.V3)),
            http_filters=[hcm_pb2.HttpFilter(name=n, typed_config=any_pb2.Any(type_url=url))
                          for n, url in HTTP_FILTERS],
        )
        packed = any_pb2.Any()
        packed.Pack(hcm)
        listener = listener_pb2.Listener(
            name=f"0.0.0.0_{port}", traffic_direction=base_pb2.OUTBOUND,
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=port)),
            filter_chains=[lc.FilterChain(filters=[lc.Filter(name=HCM, typed_config=packed)])],
        )
        listener.bind_to_port.value = False
        return listener.SerializeToString(deterministic=True)

    return build


# ------------------------------------------------------------------ envoy-data-plane (betterproto2, or betterproto)
def _betterproto_well_known() -> tuple[Any, Any, Any, Any]:
    """Any, Struct, Value, ListValue: envoy-data-plane 2.x generates its own; 1.x uses betterproto's."""
    try:
        from envoy_data_plane.google import protobuf as wk
    except ImportError:
        from betterproto.lib.google import protobuf as wk
    return wk.Any, wk.Struct, wk.Value, wk.ListValue


def betterproto_cluster() -> Callable[[int], bytes]:
    from envoy_data_plane.envoy.config.cluster.v3 import (
        CircuitBreakers,
        CircuitBreakersThresholds,
        Cluster,
        ClusterDiscoveryType,
        ClusterEdsClusterConfig,
        ClusterLbPolicy,
    )
    from envoy_data_plane.envoy.config.core.v3 import (
        AggregatedConfigSource,
        ApiVersion,
        ConfigSource,
        Http2ProtocolOptions,
        Metadata,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions,
        HttpProtocolOptionsExplicitHttpConfig,
    )
    AnyMsg, Struct, Value, ListValue = _betterproto_well_known()

    def struct(fields: dict[str, Any]) -> Any:
        return Struct(fields={k: value(v) for k, v in fields.items()})

    def value(v: Any) -> Any:
        if isinstance(v, dict):
            return Value(struct_value=struct(v))
        if isinstance(v, list):
            return Value(list_value=ListValue(values=[value(x) for x in v]))
        return Value(string_value=v)

    def build(i: int) -> bytes:
        host, name = _names(i)
        opts = HttpProtocolOptions(explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=Http2ProtocolOptions()))
        cluster = Cluster(
            name=name, type=ClusterDiscoveryType.EDS, connect_timeout=timedelta(seconds=10),
            lb_policy=ClusterLbPolicy.LEAST_REQUEST,
            circuit_breakers=CircuitBreakers(thresholds=[CircuitBreakersThresholds(
                max_connections=MAX_UINT32, max_pending_requests=MAX_UINT32, max_requests=MAX_UINT32,
                max_retries=MAX_UINT32, track_remaining=True)]),
            eds_cluster_config=ClusterEdsClusterConfig(service_name=name, eds_config=ConfigSource(
                ads=AggregatedConfigSource(), initial_fetch_timeout=timedelta(0), resource_api_version=ApiVersion.V3)),
            typed_extension_protocol_options={HPO_KEY: AnyMsg(type_url=HPO_URL, value=bytes(opts))},
            metadata=Metadata(filter_metadata={"istio": struct(
                {"services": [{"host": host, "name": f"svc-{i}", "namespace": f"ns-{i % 10}"}]})}),
        )
        return bytes(cluster)

    return build


def betterproto_listener() -> Callable[[int], bytes]:
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        AggregatedConfigSource,
        ApiVersion,
        ConfigSource,
        SocketAddress,
        TrafficDirection,
    )
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
        HttpConnectionManagerCodecType,
        HttpConnectionManagerUpgradeConfig,
        HttpFilter,
        Rds,
    )
    AnyMsg = _betterproto_well_known()[0]

    def build(i: int) -> bytes:
        port = 8000 + i % 1000
        hcm = HttpConnectionManager(
            stat_prefix=f"outbound_0.0.0.0_{port}", codec_type=HttpConnectionManagerCodecType.AUTO,
            use_remote_address=False, stream_idle_timeout=timedelta(0), normalize_path=True,
            upgrade_configs=[HttpConnectionManagerUpgradeConfig(upgrade_type="websocket")],
            rds=Rds(route_config_name=str(port), config_source=ConfigSource(
                ads=AggregatedConfigSource(), initial_fetch_timeout=timedelta(0), resource_api_version=ApiVersion.V3)),
            http_filters=[HttpFilter(name=n, typed_config=AnyMsg(type_url=url)) for n, url in HTTP_FILTERS],
        )
        listener = Listener(
            name=f"0.0.0.0_{port}", traffic_direction=TrafficDirection.OUTBOUND,
            address=Address(socket_address=SocketAddress(address="0.0.0.0", port_value=port)),
            filter_chains=[FilterChain(filters=[Filter(name=HCM, typed_config=AnyMsg(type_url=HCM_URL,
                                                                                     value=bytes(hcm)))])],
            bind_to_port=False,
        )
        return bytes(listener)

    return build


# ------------------------------------------------------------------ timing
def per_resource_us(build: Callable[[int], bytes], seconds: float, repeats: int = 3) -> float:
    """Best of `repeats` runs of about `seconds` each, in microseconds per build+serialize."""
    build(0)  # warm up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 4:  # calibrate: a slow library gets fewer rounds
        build(n)
        n += 1
    n = max(10, int(n * 4))
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for i in range(n):
            build(i)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def _differences(a: bytes, b: bytes, cls: Any) -> list[str]:
    """Text-format diff after parsing, with packed Anys expanded (each library orders an Any's inner
    bytes its own way); empty when the two are the same message."""
    import difflib

    from google.protobuf import text_format

    left, right = (text_format.MessageToString(cls.FromString(x)).splitlines() for x in (a, b))
    return [line for line in difflib.unified_diff(left, right, lineterm="", n=0) if line[:1] in "+-"][2:]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="length of each timed run (default 1)")
    args = p.parse_args(argv)

    from envoy.config.cluster.v3.cluster_pb2 import Cluster
    from envoy.config.listener.v3.listener_pb2 import Listener
    from google.protobuf.internal import api_implementation

    variants: list[tuple[str, str, Callable[[int], bytes]]] = [
        ("cluster (EDS)", f"xds-protos ({api_implementation.Type()})", upb_cluster()),
        ("listener (HCM)", f"xds-protos ({api_implementation.Type()})", upb_listener()),
    ]
    try:
        import envoy_data_plane  # noqa: F401
    except ImportError:
        print("envoy-data-plane is not importable: timing xds-protos only (see this module's docstring)")
    else:
        from importlib.metadata import version

        bp_cluster, bp_listener = betterproto_cluster(), betterproto_listener()
        for (resource, _, upb), mine, cls in ((variants[0], bp_cluster, Cluster), (variants[1], bp_listener, Listener)):
            diff = _differences(upb(7), mine(7), cls)
            if diff:  # betterproto 1.x cannot send a zero Duration: it drops `initial_fetch_timeout: 0s`
                print(f"{resource}: envoy-data-plane's message differs from xds-protos': {' '.join(diff)}")
        runtime = "betterproto2" if version("envoy-data-plane") >= "2" else f"betterproto {version('betterproto')}"
        label = f"envoy-data-plane {version('envoy-data-plane')} ({runtime})"
        variants += [("cluster (EDS)", label, bp_cluster), ("listener (HCM)", label, bp_listener)]
    sizes = {"cluster (EDS)": len(variants[0][2](7)), "listener (HCM)": len(variants[1][2](7))}
    print(f"{'resource':16} {'library':48} {'us / resource':>14}  bytes")
    for resource, library, build in variants:
        print(f"{resource:16} {library:48} {per_resource_us(build, args.seconds):14.1f}  {sizes[resource]}", flush=True)


if __name__ == "__main__":
    main()
