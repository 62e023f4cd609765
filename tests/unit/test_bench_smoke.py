"""Keeps bench/ from rotting: a 10-proxy mesh, a real server process, cold start and one pod added.

Not a timed test: it only checks that the harness still measures something sensible.
"""

from __future__ import annotations

import json

from bench import mesh
from bench.scenarios import Bench, Config, percentiles


def test_mesh_generator_writes_manifests_and_identities(tmp_path):
    ids = mesh.generate(str(tmp_path), services=10, proxies=40, namespaces=3, sidecars=True)
    assert len(ids) == 40
    assert len({p.node_id for p in ids}) == 40
    files = sorted(p.name for p in (tmp_path / "mesh").iterdir())
    assert "ns-00.yaml" in files and "sidecar-ns-00.yaml" in files
    assert len(json.loads((tmp_path / "proxies.json").read_text())) == 40


def test_percentiles_are_nearest_rank():
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p90"], p["p99"], p["max"]) == (50.0, 90.0, 99.0, 100.0)


def test_ten_proxies_cold_start_and_pod_add(tmp_path):
    bench = Bench(Config(10, 10, namespaces=2, cold_timeout=20, change_timeout=5), str(tmp_path))
    try:
        bench.setup()
        cold = bench.cold_start()
        assert cold["incomplete"] == 0, cold
        assert cold["by_type"]["cds"]["responses"] >= 10
        add = bench.pod_add(0)
        assert add["missing"] == 0 and add["convergence_s"]["n"] == 10, add
        assert add["by_type"]["eds"]["resources"] == 10  # one ClusterLoadAssignment per proxy, nothing else
    finally:
        bench.teardown()


def test_thread_sampler_attributes_cpu_to_the_thread_that_spent_it():
    import os
    import threading
    import time

    from bench.threads import by_group, sample

    spun, release = threading.Event(), threading.Event()

    def spin() -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.05:  # 50 ms of this thread's own CPU
            pass
        spun.set()
        release.wait(30)  # stay alive: a sample only sees live threads

    before = sample(os.getpid())
    assert [g for g, _, _ in before.values()].count("loop") == 1  # the main thread
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert spun.wait(30)
        groups = by_group(before, sample(os.getpid()))
    finally:
        release.set()
        worker.join()
    assert groups["other"][0] >= 40.0, groups  # the worker's 50 ms, not the main thread's


def test_protolib_builds_the_resources_it_times(capsys):
    from envoy.config.cluster.v3.cluster_pb2 import Cluster
    from envoy.config.listener.v3.listener_pb2 import Listener

    from bench import protolib

    cluster = Cluster.FromString(protolib.upb_cluster()(3))
    assert cluster.type == Cluster.EDS and cluster.eds_cluster_config.eds_config.HasField("initial_fetch_timeout")
    assert Listener.FromString(protolib.upb_listener()(3)).filter_chains[0].filters[0].name == protolib.HCM
    protolib.main(["--seconds", "0.01"])
    out = capsys.readouterr().out
    assert "cluster (EDS)    xds-protos" in out and "listener (HCM)   xds-protos" in out


def test_slow_clients_decode_everything_and_still_converge(tmp_path):
    """Slow mode (small windows, every resource decoded, a pause per message) completes and ACKs."""
    cfg = Config(10, 10, namespaces=2, cold_timeout=30, change_timeout=10,
                 client_args=("--slow", "--window", "16384", "--delay-ms", "5"))
    assert cfg.label.endswith("slow clients")
    bench = Bench(cfg, str(tmp_path))
    try:
        bench.setup()
        cold = bench.cold_start()
        assert cold["incomplete"] == 0, cold
        add = bench.pod_add(0)
        assert add["missing"] == 0 and add["convergence_s"]["n"] == 10, add
        assert add["convergence_s"]["p50"] >= 0.005  # the pause per message is taken before the ACK
    finally:
        bench.teardown()


def test_full_decoder_decodes_every_resource_and_listener_filter():
    from envoy.config.listener.v3 import listener_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
    from envoy.service.discovery.v3 import discovery_pb2
    from google.protobuf import any_pb2

    from bench.loadgen import HCM, LDS, FullDecoder

    hcm = http_connection_manager_pb2.HttpConnectionManager(stat_prefix="x")
    listener = listener_pb2.Listener(name="l")
    listener.filter_chains.add().filters.add(name="hcm").typed_config.CopyFrom(
        any_pb2.Any(type_url=HCM, value=hcm.SerializeToString()))
    resp = discovery_pb2.DiscoveryResponse(type_url=LDS)
    resp.resources.add(type_url=LDS, value=listener.SerializeToString())
    resp.resources.add(type_url=LDS, value=listener_pb2.Listener(name="m").SerializeToString())
    assert FullDecoder().decode(LDS, resp, delta=False) == 3  # two listeners and one HCM


def test_workers_are_measured_per_process(tmp_path):
    cfg = Config(10, 10, namespaces=2, cold_timeout=30, change_timeout=10, server_args=("--workers", "2"))
    assert cfg.label.endswith("2 workers")
    bench = Bench(cfg, str(tmp_path))
    try:
        bench.setup()
        cold = bench.cold_start()
        assert cold["incomplete"] == 0, cold
        add = bench.pod_add(0)
        assert add["missing"] == 0 and add["convergence_s"]["n"] == 10, add
        supervisor, *workers = add["server_cpu_per_process_s"]
        assert len(workers) == 2 and all(w > 0 for w in workers)  # both workers pushed the change
        # The total and the parts are read a moment apart: equal within a few ms.
        assert abs(add["server_cpu_s"] - supervisor - sum(workers)) < 0.005
    finally:
        bench.teardown()
