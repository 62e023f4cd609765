"""The harness itself, with no translator involved: pods, capture, a static Envoy, cleanup."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from e2e.harness import Mesh, Pod, Run, TlsClient, iptables
from e2e.harness.certs import make_ca
from e2e.harness.mesh import VIP_NET
from e2e.harness.netns import Netns, list_netns, netns_pids, sh
from e2e.harness.run import cleanup_stale
from e2e.harness.static import capture_bootstrap


def test_pods_talk_plain_http_tcp_and_dns(mesh: Mesh, pod: Callable[..., Pod]) -> None:
    a, b = pod("a"), pod("b")
    b.serve_http(8080)
    b.serve_tcp_echo(9000)

    r = a.http(f"http://{b.ip}:8080/hello", host="b.example:8080")
    assert r.status == 200, r
    body = r.json()
    assert (body["pod"], body["host"], body["path"], body["peer"]) == ("b", "b.example:8080", "/hello", a.ip)

    assert a.tcp(b.ip, 9000, "hi").reply == "b hi"

    mesh.dns.set("b.e2e.test", b.ip)
    r = a.http("http://b.e2e.test:8080/dns")
    assert r.served_by == "b", r
    # Short names go through the pod's search list, as with kube-dns.
    mesh.dns.set("b.default.svc.cluster.local", b.ip)
    assert a.http("http://b:8080/short").served_by == "b"
    mesh.dns.remove("b.e2e.test")
    assert a.http("http://b.e2e.test:8080/").kind == "other"  # name no longer resolves


def test_untranslated_vip_fails_fast(pod: Callable[..., Pod]) -> None:
    """A VIP exists only in sidecar config: without a sidecar the connection is refused by routing."""
    a = pod("a")
    for _ in range(10):  # more than the kernel's default ICMP burst, which the node disables
        start = time.monotonic()
        r = a.tcp(str(VIP_NET[100]), 8080, timeout=5)
        assert r.kind == "unreachable", r
        assert time.monotonic() - start < 2


def test_unix_socket_and_loopback_apps(pod: Callable[..., Pod]) -> None:
    a, b = pod("a"), pod("b")
    sock = a.serve_http_unix()
    assert oct(sock.stat().st_mode & 0o777) == oct(0o777)
    r = a.http("http://svc/unix", unix=str(sock), host="svc:80")
    assert (r.status, r.json()["path"]) == (200, "/unix")

    a.serve_http(8081, bind="127.0.0.1")
    assert a.http("http://127.0.0.1:8081/").served_by == "a"
    assert b.http(f"http://{a.ip}:8081/", timeout=2).kind == "refused"


def test_backends_for_traffic_policies(mesh: Mesh, pod: Callable[..., Pod]) -> None:
    """The backends DestinationRule tests act on: always-failing, slow, HTTPS (naming the SNI it
    got); and the clients: parallel requests with headers, repeated TCP connections."""
    a, b = pod("a"), pod("b")
    b.serve_http(8080, status=500)
    b.serve_http(8081)
    b.serve_tcp_echo(9000)
    certs = make_ca(mesh.workdir / "smoke-certs")
    b.serve_https(8443, certs.issue("b", ["b.e2e.test"]))

    r = a.http(f"http://{b.ip}:8080/x")
    assert (r.status, r.served_by) == (500, "b"), r
    start = time.monotonic()
    results = a.http_many(f"http://{b.ip}:8081/delay/1", 4, parallel=True, headers={"x-user": "u1"})
    assert time.monotonic() - start < 3  # in flight together: one after another takes 4 s
    assert [(r.status, r.json()["headers"]["x-user"]) for r in results] == [(200, "u1")] * 4
    assert [r.reply for r in a.tcp_many(b.ip, 9000, 3, "hi")] == ["b hi"] * 3

    r = a.http(f"https://{b.ip}:8443/s", tls=TlsClient(sni="b.e2e.test", ca=str(certs.ca)))
    assert (r.status, r.json()["sni"], r.json()["path"]) == (200, "b.e2e.test", "/s"), r
    assert a.http(f"http://{b.ip}:8443/plain", timeout=2).status is None  # TLS only


def test_capture_sends_traffic_through_envoy(pod: Callable[..., Pod]) -> None:
    """istio-init's REDIRECT rules + a static passthrough Envoy: both directions go through it."""
    app, ext = pod("app"), pod("ext")
    app.serve_http(8080)
    ext.serve_http(8080)
    app.capture()
    assert iptables.by_chain(iptables.nat_rules(app.ns)) == iptables.by_chain(iptables.istio_rules())
    envoy = app.start_envoy(capture_bootstrap())
    uid_line = next(ln for ln in Path(f"/proc/{envoy.proc.pid}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1337"] * 4  # real, effective, saved, fs

    # Outbound: app -> ext is redirected to 15001 and passed through to the original destination.
    before = envoy.stat("cluster.PassthroughCluster.upstream_cx_total")
    r = app.http(f"http://{ext.ip}:8080/out")
    assert r.served_by == "ext", r
    assert r.json()["peer"] == app.ip  # Envoy's own upstream connection left from the pod IP
    envoy.wait_stat("cluster.PassthroughCluster.upstream_cx_total", before + 1)
    assert envoy.stat("listener.0.0.0.0_15001.downstream_cx_total") >= 1

    # Inbound: ext -> app is redirected to 15006 and reaches the app from 127.0.0.6.
    before = envoy.stat("cluster.InboundPassthroughCluster.upstream_cx_total")
    r = ext.http(f"http://{app.ip}:8080/in")
    assert r.served_by == "app", r
    assert r.json()["peer"] == "127.0.0.6"
    envoy.wait_stat("cluster.InboundPassthroughCluster.upstream_cx_total", before + 1)

    # Loopback traffic of the app is not captured.
    total = envoy.stat("listener.0.0.0.0_15001.downstream_cx_total")
    assert app.http("http://127.0.0.1:8080/local").json()["peer"] == "127.0.0.1"
    assert envoy.stat("listener.0.0.0.0_15001.downstream_cx_total") == total

    # Without Envoy the captured traffic has nowhere to go: capture really is in the path.
    app.stop_envoy()
    assert app.http(f"http://{ext.ip}:8080/", timeout=2).kind == "refused"
    assert ext.http(f"http://{app.ip}:8080/", timeout=2).kind == "refused"


def test_close_removes_namespaces_links_processes_and_files() -> None:
    run = Run()
    try:
        m = Mesh(run)
        a = m.add_pod("a")
        a.serve_http(8080)
        a.capture()
        a.start_envoy(capture_bootstrap())
        names = [n for n in list_netns() if n.startswith(run.prefix + "-")]
        assert len(names) == 2
        pids = [pid for n in names for pid in netns_pids(n)]
        assert len(pids) >= 3  # dns, app, envoy
        workdir = run.workdir
    finally:
        run.close()
    assert not [n for n in list_netns() if n.startswith(run.prefix + "-")]
    assert not [p for p in pids if _alive(p)]
    assert not workdir.exists()
    assert not any((Path("/etc/netns") / n).exists() for n in names)


def test_start_of_run_cleanup_removes_crashed_runs(tmp_path: Path) -> None:
    """A namespace left by a run that died (no lock held) is removed, its processes killed."""
    while True:
        stale = f"xe{int(time.monotonic_ns()) % 0x10000:04x}"
        if not any(n.startswith(stale + "-") for n in list_netns()) and not _lock_held(stale):
            break
    ns = Netns.create(f"{stale}-node", tmp_path / "ns", resolv_conf="nameserver 198.18.0.1\n")
    proc = ns.spawn("sleeper", ["sleep", "600"])
    try:
        assert f"{stale}-node" in cleanup_stale()
        assert f"{stale}-node" not in list_netns()
        proc.popen.wait(5)
        assert not (Path("/etc/netns") / f"{stale}-node").exists()
    finally:
        ns.destroy()


def _lock_held(prefix: str) -> bool:
    from e2e.harness.run import _prefix_alive

    return _prefix_alive(prefix)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sh_reports_failures() -> None:
    import pytest

    from e2e.harness.netns import CommandError

    with pytest.raises(CommandError):
        sh("ip", "netns", "exec", "xe-no-such-netns", "true")
