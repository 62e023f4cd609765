"""The node: a namespace with a bridge, DNS and (optionally) the xds-server; pods hang off it.

Addressing (198.18.0.0/15 only, and only inside namespaces we create):
  198.18.0.0/24  pod network; the bridge (node side) is 198.18.0.1, pods from .10 up
  198.19.0.0/16  service VIPs; the node rejects them with ICMP host-unreachable, so a connection
                 a sidecar did not translate fails fast instead of hanging — "not imported" is visible.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import server
from e2e.harness.dns import Dns
from e2e.harness.envoy import Envoy
from e2e.harness.netns import Netns
from e2e.harness.pod import Pod
from e2e.harness.run import Run

POD_NET = ipaddress.ip_network("198.18.0.0/24")
VIP_NET = ipaddress.ip_network("198.19.0.0/16")
GATEWAY = "198.18.0.1"
BRIDGE_MAC = "02:00:c6:12:00:01"  # locally administered
XDS_PORT = 15010
SERVER_ADMIN = "127.0.0.1:15014"


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    vip: str
    ports: tuple[int, ...]

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


class Mesh:
    source = "files"  # where the server reads config: `--config-dir` (KubeMesh: "kubernetes")
    # Services every cluster of this kind has on its own, which tests comparing whole sets ignore.
    platform_hosts: frozenset[str] = frozenset()

    def __init__(self, run: Run) -> None:
        self.run = run
        self.pods: dict[str, Pod] = {}
        self._ips = (str(ip) for ip in itertools.islice(POD_NET.hosts(), 9, None))
        self._vips = (str(ip) for ip in itertools.islice(VIP_NET.hosts(), 9, None))
        self._links = itertools.count()
        self.server: server.XdsServer | None = None
        self.id = run.next_id()
        self.workdir = run.workdir / f"mesh{self.id}"
        self.config_dir = self.workdir / "config"
        self.config_dir.mkdir(parents=True)
        self.node = Netns.create(run.name(f"m{self.id}-node"), self.workdir / "node")
        self._cleanup = run.on_close(self.close)
        try:
            self._build_node()
            self.dns = Dns(self.node, GATEWAY)
        except BaseException:
            self.close()
            raise

    def _build_node(self) -> None:
        n = self.node
        n.ip("link", "add", "br0", "type", "bridge")
        # A bridge without a MAC of its own takes the lowest MAC of its ports and changes it as
        # pods come and go; pods' ARP entries for the gateway (DNS, xDS, VIP routing) then point
        # at a MAC nobody has until they expire (~30 s of lost traffic). A fixed one never moves.
        n.ip("link", "set", "br0", "address", BRIDGE_MAC)
        n.ip("addr", "add", f"{GATEWAY}/{POD_NET.prefixlen}", "dev", "br0")
        n.ip("link", "set", "br0", "up")
        # VIPs are local to the node and rejected with host-unreachable, so a connection no sidecar
        # translated fails at once. (An `unreachable` route would do it too, but the kernel
        # rate-limits those errors globally to one a second after a burst of five, and the
        # sysctls for that are not per-namespace; REJECT is limited only by icmp_ratelimit.)
        n.ip("route", "add", "local", str(VIP_NET), "dev", "lo")
        n.exec("iptables", "-A", "INPUT", "-d", str(VIP_NET), "-j", "REJECT",
               "--reject-with", "icmp-host-unreachable")
        n.sysctl("net.ipv4.icmp_ratelimit", 0)

    # -- pods -----------------------------------------------------------------------------------

    def add_pod(self, name: str, namespace: str = "default", *, labels: dict[str, str] | None = None,
                ip: str | None = None) -> Pod:
        """A bare pod: namespace, veth on the bridge, address, default route; no apps, no sidecar."""
        key = f"{name}.{namespace}"
        assert key not in self.pods, f"pod {key} exists"
        ip = ip or next(self._ips)
        assert ipaddress.ip_address(ip) in POD_NET and ip != GATEWAY, ip
        link = f"v{next(self._links)}"
        ns = Netns.create(self.run.name(f"m{self.id}-{name}.{namespace}"), self.workdir / key,
                          resolv_conf=self.dns.resolv_conf(namespace))
        pod = Pod(name, namespace, ip, ns, dict(labels or {}))
        self.pods[key] = pod
        try:
            self.node.ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
            self.node.ip("link", "set", link, "master", "br0", "up")
            ns.ip("addr", "add", f"{ip}/{POD_NET.prefixlen}", "dev", "eth0")
            ns.ip("link", "set", "eth0", "up")
            ns.ip("route", "add", "default", "via", GATEWAY)
            # uid 1337 may bind privileged ports (Sidecar ingress/egress on :80), as in Istio pods.
            ns.sysctl("net.ipv4.ip_unprivileged_port_start", 0)
        except BaseException:
            self.remove_pod(pod)
            raise
        return pod

    def remove_pod(self, pod: Pod, *, unregister: bool = True) -> None:
        self.pods.pop(pod.fqdn_id, None)
        if unregister:
            self.delete(f"pod-{pod.namespace}-{pod.name}")
        pod.envoy = None
        pod.ns.destroy()

    def register(self, pod: Pod, *, ready: bool = True) -> None:
        """Tell the server about the pod (the Pod object a kubelet would report)."""
        self.apply(f"pod-{pod.namespace}-{pod.name}", pod.manifest(ready=ready))

    def inject(self, pod: Pod, *, interception: str = "REDIRECT", sotw: bool = False,
               wait: bool = True) -> Envoy:
        """Sidecar the pod the Istio way: register it, iptables (unless NONE), Envoy on our xDS."""
        assert self.server is not None, "start_server() first"
        self.register(pod)
        if interception == "REDIRECT":
            pod.capture()
        elif interception != "NONE":
            raise ValueError(f"unsupported interception mode {interception}")
        pod.interception = interception
        metadata: dict[str, Any] = {
            "INTERCEPTION_MODE": interception,
            "NAMESPACE": pod.namespace,
            "INSTANCE_IPS": pod.ip,
            "LABELS": pod.labels,
        }
        boot = server.bootstrap(pod.node_id(), self.server.xds_address, metadata, sotw=sotw)
        return pod.start_envoy(boot, wait=wait)

    # -- config ----------------------------------------------------------------------------------

    def start_server(self, extra_args: list[str] | None = None) -> server.XdsServer:
        assert self.server is None
        self.server = server.XdsServer(self.node, self.config_dir, f"{GATEWAY}:{XDS_PORT}", SERVER_ADMIN,
                                       extra_args)
        return self.server

    def apply(self, name: str, *docs: dict[str, Any] | str) -> Path:
        """Write manifests to `<config-dir>/<name>.yaml` atomically (the server watches the dir)."""
        text = "---\n".join(d if isinstance(d, str) else yaml.safe_dump(d, sort_keys=False) for d in docs)
        path = self.config_dir / f"{name}.yaml"
        tmp = self.config_dir / f".{name}.tmp"  # dot file, not *.yaml: invisible to the watcher
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def delete(self, name: str) -> None:
        (self.config_dir / f"{name}.yaml").unlink(missing_ok=True)

    def service(self, name: str, namespace: str = "default", *, selector: dict[str, str] | None = None,
                ports: Iterable[int | dict[str, Any]] = (8080,), vip: str | None = None,
                headless: bool = False, annotations: dict[str, str] | None = None) -> Service:
        """A ClusterIP Service with a VIP from 198.19.0.0/16; ports are numbers or full port dicts.

        Its FQDN resolves to the VIP in the node DNS, as kube-dns would answer. `headless`:
        `clusterIP: None`, and the FQDN resolves to the IPs of the pods the selector picks now.
        """
        selector = dict(selector or {"app": name})
        vip = "None" if headless else (vip or next(self._vips))
        port_docs = [p if isinstance(p, dict) else {"name": f"http-{p}", "port": p, "targetPort": p}
                     for p in ports]
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if annotations:
            metadata["annotations"] = dict(annotations)
        self.apply(f"svc-{namespace}-{name}", {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {"clusterIP": vip, "selector": selector, "ports": port_docs},
        })
        svc = Service(name, namespace, vip, tuple(int(p["port"]) for p in port_docs))
        if headless:
            self.dns.set(svc.fqdn, *[p.ip for p in self.pods.values() if p.namespace == namespace
                                     and selector.items() <= p.labels.items()])
        else:
            self.dns.set(svc.fqdn, vip)
        return svc

    def rejected_updates(self) -> dict[str, dict[str, int]]:
        """NACKed xDS updates per pod, for every pod running an Envoy; {} when all is accepted."""
        out = {}
        for key, pod in list(self.pods.items()):  # a snapshot: KubeMesh's controllers add pods too
            if pod.envoy is not None and pod.envoy.proc.alive():
                rejected = pod.envoy.rejected_updates()
                if rejected:
                    out[key] = rejected
        return out

    # -- lifecycle -------------------------------------------------------------------------------

    def debug_dump(self) -> str:
        parts = [f"=== mesh {self.node.name} (workdir {self.workdir})"]
        if self.server:
            parts.append(f"[xds-server]\n{self.server.proc.log_tail(60)}")
        parts += [pod.debug_dump() for pod in list(self.pods.values())]
        return "\n".join(parts)

    def close(self) -> None:
        self.run.forget(self._cleanup)
        for pod in list(self.pods.values()):
            try:
                self.remove_pod(pod, unregister=False)
            except Exception:
                pass
        self.node.destroy()


__all__ = ["Mesh", "Pod", "Service"]
