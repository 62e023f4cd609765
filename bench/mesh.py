"""Mesh generator: M services over K namespaces, 3 pods each, optionally one `./*` Sidecar per namespace
and R VirtualServices and R DestinationRules for R of the HTTP services (`--rules`).

Writes plain Kubernetes/Istio manifests (one file per namespace, so a change rewrites or adds
one small file) and `proxies.json`, the node identities the load generator connects as: one per
pod, spread round-robin over services so that every namespace has proxies. When more proxies
than service pods are asked for, extra `client-N` pods (selected by no Service) are added.

Port mix, like a typical mesh: 80% HTTP on 80, 10% gRPC on 9090, 10% TCP (redis) on 6379.

    python -m bench.mesh --services 1000 --proxies 2000 --out /tmp/mesh [--sidecars] [--rules 100]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
from dataclasses import asdict, dataclass

PODS_PER_SERVICE = 3
DEFAULT_NAMESPACES = 20
POD_NET = ipaddress.ip_network("10.128.0.0/10")  # pod IPs
SVC_NET = ipaddress.ip_network("10.96.0.0/16")  # cluster IPs
CHURN_NET = ipaddress.ip_network("10.64.0.0/12")  # pods the scenarios add


@dataclass(frozen=True, slots=True)
class ProxyIdentity:
    node_id: str
    namespace: str
    pod: str
    ip: str
    app: str  # the Service whose pod this is ("" for client pods)

    def metadata(self) -> dict[str, object]:
        """Node metadata the way istio-agent sends it (the parts a control plane reads)."""
        return {
            "NAMESPACE": self.namespace,
            "INSTANCE_IPS": self.ip,
            "LABELS": {"app": self.app or "client", "version": "v1"},
            "INTERCEPTION_MODE": "REDIRECT",
            "CLUSTER_ID": "Kubernetes",
            "SERVICE_ACCOUNT": f"spiffe://cluster.local/ns/{self.namespace}/sa/default",
            "ISTIO_VERSION": "1.26.0",
            "WORKLOAD_NAME": self.app or "client",
            "MESH_ID": "cluster.local",
        }


def namespace_of(i: int, namespaces: int) -> str:
    return f"ns-{i % namespaces:02d}"


def service_name(i: int) -> str:
    return f"svc-{i:04d}"


def service_port(i: int) -> tuple[str, int, int]:
    """(port name, port, targetPort) of service i."""
    if i % 10 == 8:
        return "grpc", 9090, 9090
    if i % 10 == 9:
        return "tcp-redis", 6379, 6379
    return "http", 80, 8080


def hostname(i: int, namespaces: int) -> str:
    return f"{service_name(i)}.{namespace_of(i, namespaces)}.svc.cluster.local"


def cluster_name(i: int, namespaces: int) -> str:
    """Istio's outbound cluster (and EDS) name of service i."""
    return f"outbound|{service_port(i)[1]}||{hostname(i, namespaces)}"


def pod_ip(n: int) -> str:
    return str(POD_NET.network_address + 1 + n)


def churn_ip(n: int) -> str:
    return str(CHURN_NET.network_address + 1 + n)


def service_doc(i: int, namespaces: int) -> str:
    name, port, target = service_port(i)
    vip = SVC_NET.network_address + 10 + i
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {service_name(i)}, "
            f"namespace: {namespace_of(i, namespaces)}}}\n"
            f"spec: {{clusterIP: {vip}, selector: {{app: {service_name(i)}}}, "
            f"ports: [{{name: {name}, port: {port}, targetPort: {target}}}]}}\n")


def pod_doc(name: str, namespace: str, app: str, ip: str, container_port: int, ready: bool = True) -> str:
    status = "True" if ready else "False"
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, "
            f"labels: {{app: {app}, version: v1}}}}\n"
            f"spec: {{containers: [{{name: app, ports: [{{containerPort: {container_port}}}]}}]}}\n"
            f"status: {{podIP: {ip}, conditions: [{{type: Ready, status: \"{status}\"}}]}}\n")


def sidecar_doc(namespace: str, hosts: tuple[str, ...] = ("./*",)) -> str:
    """A namespace-wide Sidecar that narrows egress to `hosts` (default: own namespace only)."""
    listed = ", ".join(f'"{h}"' for h in hosts)
    return (f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: {namespace}}}\n"
            f"spec: {{egress: [{{hosts: [{listed}]}}]}}\n")


def rule_services(services: int, rules: int) -> list[int]:
    """The HTTP services that get a VirtualService and a DestinationRule (svc-0000 first), spread
    over the namespaces (a stride coprime with the candidates' count)."""
    candidates = [i for i in range(services) if service_port(i)[1] == 80]
    if not candidates:
        return []
    stride = next(s for s in range(37, 10**6) if math.gcd(s, len(candidates)) == 1)
    return [candidates[(k * stride) % len(candidates)] for k in range(min(rules, len(candidates)))]


def virtual_service_doc(i: int, namespaces: int, marker: str = "v0") -> str:
    """A VirtualService for service i: a header-matched canary route to subset v1, else the
    service with a timeout and retries; `marker` is a request header value (a change to it is an
    HTTP route change: RDS only)."""
    host = hostname(i, namespaces)
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {service_name(i)}, namespace: {namespace_of(i, namespaces)}}}\n"
            f"spec:\n  hosts: [{host}]\n  http:\n"
            f"  - match: [{{headers: {{x-canary: {{exact: \"1\"}}}}}}]\n"
            f"    route: [{{destination: {{host: {host}, subset: v1}}}}]\n"
            f"  - route: [{{destination: {{host: {host}}}}}]\n"
            f"    timeout: 10s\n    retries: {{attempts: 2, perTryTimeout: 3s}}\n"
            f"    headers: {{request: {{set: {{x-bench-rule: \"{marker}\"}}}}}}\n")


def destination_rule_doc(i: int, namespaces: int) -> str:
    """A DestinationRule for service i: a connection pool, outlier detection, subset v1 (the bench Pods' label)."""
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: {service_name(i)}, namespace: {namespace_of(i, namespaces)}}}\n"
            f"spec:\n  host: {hostname(i, namespaces)}\n"
            f"  trafficPolicy:\n    connectionPool: {{http: {{http1MaxPendingRequests: 100}}}}\n"
            f"    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s}}\n"
            f"  subsets: [{{name: v1, labels: {{version: v1}}}}]\n")


def write_file(path: str, text: str) -> None:
    """Atomically (temp file + rename), as config management tools do: a reader never sees half a file."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def generate(out: str, services: int, proxies: int, namespaces: int = DEFAULT_NAMESPACES,
             sidecars: bool = False, rules: int = 0) -> list[ProxyIdentity]:
    """Write the mesh below out/mesh and the identities to out/proxies.json; return the identities."""
    mesh_dir = os.path.join(out, "mesh")
    os.makedirs(mesh_dir, exist_ok=True)
    for name in os.listdir(mesh_dir):
        os.unlink(os.path.join(mesh_dir, name))
    docs: dict[str, list[str]] = {namespace_of(k, namespaces): [] for k in range(namespaces)}
    by_service: list[list[ProxyIdentity]] = []
    n = 0
    for i in range(services):
        ns = namespace_of(i, namespaces)
        docs[ns].append(service_doc(i, namespaces))
        target = service_port(i)[2]
        pods = []
        for k in range(PODS_PER_SERVICE):
            pod = f"{service_name(i)}-{k}"
            ip = pod_ip(n)
            n += 1
            docs[ns].append(pod_doc(pod, ns, service_name(i), ip, target))
            pods.append(ProxyIdentity(f"sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local", ns, pod, ip,
                                      service_name(i)))
        by_service.append(pods)
    # Round-robin over services: proxy j is pod j // M of service j % M.
    identities = [by_service[j % services][j // services] for j in range(min(proxies, n))]
    for c in range(proxies - len(identities)):
        ns = namespace_of(c, namespaces)
        pod, ip = f"client-{c}", pod_ip(n)
        n += 1
        docs[ns].append(pod_doc(pod, ns, "client", ip, 8080))
        identities.append(ProxyIdentity(f"sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local", ns, pod, ip, ""))
    for ns, parts in docs.items():
        with open(os.path.join(mesh_dir, f"{ns}.yaml"), "w") as f:
            f.write("---\n".join(parts))
        if sidecars:
            write_file(os.path.join(mesh_dir, f"sidecar-{ns}.yaml"), sidecar_doc(ns))
    for i in rule_services(services, rules):  # one file each: a change rewrites one object
        write_file(os.path.join(mesh_dir, f"vs-{service_name(i)}.yaml"), virtual_service_doc(i, namespaces))
        write_file(os.path.join(mesh_dir, f"dr-{service_name(i)}.yaml"), destination_rule_doc(i, namespaces))
    with open(os.path.join(out, "proxies.json"), "w") as f:
        json.dump([asdict(p) for p in identities], f)
    return identities


def load_identities(path: str) -> list[ProxyIdentity]:
    with open(path) as f:
        return [ProxyIdentity(**d) for d in json.load(f)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--proxies", type=int, default=100)
    p.add_argument("--namespaces", type=int, default=DEFAULT_NAMESPACES)
    p.add_argument("--sidecars", action="store_true", help="a `./*` Sidecar in every namespace")
    p.add_argument("--rules", type=int, default=0, help="VirtualServices and DestinationRules (as many of each)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    ids = generate(a.out, a.services, a.proxies, a.namespaces, a.sidecars, a.rules)
    print(f"{a.services} services, {len(ids)} proxies in {a.namespaces} namespaces -> {a.out}")


if __name__ == "__main__":
    main()
