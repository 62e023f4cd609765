"""The Python side of one change, in process and without gRPC: planner push + every stream's machine.

    python -m bench.push_path --proxies 2000 --services 1000 [--sidecars] [--rounds 5] [--rules 100 [--change vs]]

Builds the bench mesh in a Store, attaches N delta streams (a DeltaMachine each, with the server's
Metrics observer, synced like Envoy: CDS and LDS wildcard, EDS and RDS by the names they learn),
then adds and removes one pod of service 0 `--rounds` times (`--change vs`: rewrites the
VirtualService of service 0 with another HTTP header value, twice per round; needs `--rules`).
Per change it prints the planner's push, the streams' work (on_snapshot, each response counted
as sent, the ACK parsed from bytes and handed back), and the garbage collector's settle, as the
server runs them on its loop thread. What it leaves out is gRPC's own per-stream cost (write,
read, HTTP/2): `bench.run` measures all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import tempfile
import time
from typing import Any

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from bench import mesh
from xds_server.admin.metrics import Metrics
from xds_server.config import ObjectRef
from xds_server.mesh.proxy import proxy_from_node
from xds_server.push.collector import Collector
from xds_server.push.dependencies import ProxyDependencies
from xds_server.push.planner import Planner
from xds_server.resources import TypeUrl
from xds_server.sources.files import load_file
from xds_server.store import Store
from xds_server.translate import generate
from xds_server.xds.delta import DeltaMachine
from xds_server.xds.services import Connection
from xds_server.xds.shared import SharedResponses
from xds_server.xds.subscription import NameSets

NAME_SETS = NameSets()  # shared by every stream, as in the server
SHARED = SharedResponses()  # likewise


class Stream:
    """One delta ADS stream as the server holds it, fed by an Envoy-like client in the same process."""

    def __init__(self, n: int, identity: mesh.ProxyIdentity, planner: Planner, metrics: Metrics) -> None:
        self.proxy = proxy_from_node(identity.node_id, identity.metadata())
        self.machine = DeltaMachine(None, name_sets=NAME_SETS, shared=SHARED)
        self.conn = Connection(f"{self.proxy.key}-{n}", self.proxy, "bench", "delta", "Delta", self.machine)
        self.machine.observer = metrics.stream_observer(self.conn)
        self.metrics = metrics
        self.woken = False
        metrics.connected(self.conn)
        self.entry = planner.cache.attach(self.proxy, self.wake)

    def wake(self) -> None:
        self.woken = True

    def request(self, type_url: TypeUrl, nonce: str = "", subscribe: tuple[str, ...] = ()) -> int:
        """Send one request (as bytes, parsed like the server's deserializer); ACK what comes back."""
        req = DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce, resource_names_subscribe=subscribe)
        return self.answer(self.machine.on_request(DeltaDiscoveryRequest.FromString(req.SerializeToString()),
                                                   self.entry.snapshot))

    def answer(self, outgoing: list[Any]) -> int:
        sent = 0
        for out in outgoing:
            self.metrics.sent(self.conn, out.type_url, out.resources, len(out.payload), 0.0)
            sent += 1 + self.request(out.type_url, out.nonce)
        return sent

    def sync(self) -> None:
        snapshot = self.entry.snapshot
        self.request(TypeUrl.CLUSTER)
        self.request(TypeUrl.ENDPOINT, subscribe=tuple(snapshot.get(TypeUrl.ENDPOINT)))
        self.request(TypeUrl.LISTENER)
        self.request(TypeUrl.ROUTE, subscribe=tuple(snapshot.get(TypeUrl.ROUTE)))

    def pump(self) -> int:
        if not self.woken:
            return 0
        self.woken = False
        return self.answer(self.machine.on_snapshot(self.entry.snapshot))


async def run(proxies: int, services: int, sidecars: bool, rounds: int, profile: int = 0, rules: int = 0,
              change: str = "pod") -> None:
    work = tempfile.mkdtemp(prefix="xds-push-path-")
    identities = mesh.generate(work, services, proxies, sidecars=sidecars, rules=rules)
    mesh_dir = os.path.join(work, "mesh")
    store = Store()
    for name in sorted(os.listdir(mesh_dir)):
        path = os.path.join(mesh_dir, name)
        store.replace(path, load_file(path).objects)
    metrics = Metrics(store)
    planner = Planner(store, generate, ProxyDependencies(), observer=metrics)
    collector = Collector()
    t = time.perf_counter()
    streams = [Stream(n, identity, planner, metrics) for n, identity in enumerate(identities)]
    for s in streams:
        s.sync()
    print(f"{proxies} proxies x {services} services{' (Sidecar ./*)' if sidecars else ''}"
          f"{f' with {rules} VirtualServices and DestinationRules' if rules else ''}: "
          f"attached and synced in {time.perf_counter() - t:.2f}s")
    collector.settle()  # what the server's collector tick does every second

    namespace = mesh.namespace_of(0, mesh.DEFAULT_NAMESPACES)
    results: dict[str, list[float]] = {"push": [], "streams": [], "gc": [], "total": []}
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    for r in range(rounds):
        for step in ("add", "remove"):
            if change == "vs":
                path = os.path.join(mesh_dir, f"vs-{mesh.service_name(0)}.yaml")
                mesh.write_file(path, mesh.virtual_service_doc(0, mesh.DEFAULT_NAMESPACES, f"{step}-{r}"))
                store.replace(path, load_file(path).objects)
                changed = ObjectRef("VirtualService", namespace, mesh.service_name(0))
            else:
                path = os.path.join(mesh_dir, f"churn-{r}.yaml")
                if step == "add":
                    mesh.write_file(path, mesh.pod_doc(f"churn-{r}", namespace, mesh.service_name(0),
                                                       mesh.churn_ip(r), mesh.service_port(0)[2]))
                    store.replace(path, load_file(path).objects)
                else:
                    os.unlink(path)
                    store.replace(path, ())
                changed = ObjectRef("Pod", namespace, f"churn-{r}")
            t0 = time.perf_counter()
            await planner.push(frozenset({changed}))
            t1 = time.perf_counter()
            responses = sum(s.pump() for s in streams)
            t2 = time.perf_counter()
            collector.settle()  # the next tick's work (off the push path in the server)
            t3 = time.perf_counter()
            for key, v in (("push", t1 - t0), ("streams", t2 - t1), ("gc", t3 - t2), ("total", t3 - t0)):
                results[key].append(v)
            print(f"  {step} {r}: push {1000 * (t1 - t0):6.1f} ms ({planner.visited} visited), "
                  f"streams {1000 * (t2 - t1):6.1f} ms ({responses} responses), gc settle {1000 * (t3 - t2):5.1f} ms")
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(profile)
    per = {k: statistics.median(v) for k, v in results.items()}
    print(f"median per change: push {1000 * per['push']:.1f} ms, streams {1000 * per['streams']:.1f} ms, "
          f"gc {1000 * per['gc']:.1f} ms, total {1000 * per['total']:.1f} ms "
          f"({1e6 * per['total'] / proxies:.1f} us per proxy)")
    gc.collect()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", type=int, default=2000)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--sidecars", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rules", type=int, default=0, help="VirtualServices and DestinationRules in the mesh")
    p.add_argument("--change", choices=("pod", "vs"), default="pod",
                   help="pod: add and remove a Pod of service 0; vs: change its VirtualService's HTTP route")
    p.add_argument("--profile", type=int, default=0, metavar="TOP",
                   help="cProfile the changes and print the TOP functions by own time (slows them down)")
    a = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if a.change == "vs" and not a.rules:
        p.error("--change vs needs --rules")
    asyncio.run(run(a.proxies, a.services, a.sidecars, a.rounds, a.profile, a.rules, a.change))


if __name__ == "__main__":
    main()
