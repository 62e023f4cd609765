"""`xds-server inject -f FILE|-`: add an Envoy sidecar and an iptables init container to workloads.

What Istio's injector adds, in spirit, for a sidecar talking to this server:

* `istio-init` (init container, root with NET_ADMIN/NET_RAW only) loads istio-init's REDIRECT
  rules (istio `tools/istio-iptables/pkg/capture/run.go`) with `iptables-restore`; it is left out when the pod
  asks for `sidecar.istio.io/interceptionMode: NONE`. It runs the xds-server image, which ships
  `iptables` for this purpose.
* `istio-proxy` (plain upstream Envoy as uid/gid 1337) gets its whole bootstrap on the command
  line (`--config-yaml`), rendered by `build_bootstrap` (the code behind `xds-server bootstrap`).
  The pod's identity comes from the downward API: env vars `POD_NAME`, `POD_NAMESPACE`,
  `INSTANCE_IP`, `INSTANCE_IPS`, which the kubelet substitutes for `$(VAR)` in `args`. So the
  node id is `sidecar~<podIP>~<podName>.<namespace>~<namespace>.svc.cluster.local` with no agent,
  no shared volume and no shell in the Envoy image. LABELS are the pod template's labels at
  injection time (the server prefers the live Pod's labels anyway).
  Two static listeners as in Istio: 15021 `/healthz/ready` (Envoy's `/ready`: LIVE once the
  first xDS config arrived; the readiness probe) and 15090 `/stats/prometheus`.

The pod also gets `net.ipv4.ip_unprivileged_port_start=0` (so Envoy may bind low ports for
Sidecar listeners), the `sidecar.istio.io/status` annotation (Istio's injector then leaves the pod
alone) and `kubectl.kubernetes.io/default-container`. Injection is idempotent: containers named
`istio-init`/`istio-proxy` are replaced, so injecting again with other options updates them.

Honoured pod (template) annotations, Istio's names: `sidecar.istio.io/inject` ("false" skips; label
or annotation), `sidecar.istio.io/interceptionMode` (REDIRECT | NONE), `sidecar.istio.io/proxyImage`,
`sidecar.istio.io/nativeSidecar` ("true": Envoy as a restartable init container, for Jobs),
`sidecar.istio.io/logLevel`, `sidecar.istio.io/proxyCPU|proxyMemory|proxyCPULimit|proxyMemoryLimit`,
`traffic.sidecar.istio.io/includeInboundPorts|excludeInboundPorts|excludeOutboundPorts|
includeOutboundIPRanges|excludeOutboundIPRanges`.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xds_server import __version__
from xds_server.commands.bootstrap import BootstrapError, build_bootstrap

PROXY_CONTAINER = "istio-proxy"
INIT_CONTAINER = "istio-init"
PROXY_UID = 1337
OUTBOUND_PORT, INBOUND_PORT, ADMIN_PORT = 15001, 15006, 15000
READY_PORT, PROMETHEUS_PORT = 15021, 15090
TUNNEL_PORT = 15008
DEFAULT_EXCLUDED_INBOUND = (15090, 15021, 15020)  # istio-init's `-d 15090,15021,15020`
DEFAULT_INIT_IMAGE = f"xds-server:{__version__}"
INIT_IMAGE_ENV = "XDS_INJECT_INIT_IMAGE"  # fallback for --init-image
DOMAIN_SUFFIX = "cluster.local"
UNPRIVILEGED_PORTS_SYSCTL = "net.ipv4.ip_unprivileged_port_start"

A_INJECT = "sidecar.istio.io/inject"
A_STATUS = "sidecar.istio.io/status"
A_INTERCEPTION = "sidecar.istio.io/interceptionMode"
A_PROXY_IMAGE = "sidecar.istio.io/proxyImage"
A_NATIVE = "sidecar.istio.io/nativeSidecar"
A_LOG_LEVEL = "sidecar.istio.io/logLevel"
A_CPU, A_MEMORY = "sidecar.istio.io/proxyCPU", "sidecar.istio.io/proxyMemory"
A_CPU_LIMIT, A_MEMORY_LIMIT = "sidecar.istio.io/proxyCPULimit", "sidecar.istio.io/proxyMemoryLimit"
A_IN_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
A_EX_IN_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
A_EX_OUT_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
A_IN_CIDRS = "traffic.sidecar.istio.io/includeOutboundIPRanges"
A_EX_CIDRS = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
A_DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

# kind -> path of the pod template inside the object ("" = the object is the pod itself)
POD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical", "off")


class InjectError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Options:
    xds_address: str = "xds-server.xds-system.svc:15010"
    proxy_image: str = "envoyproxy/envoy:v1.40.0"
    init_image: str = DEFAULT_INIT_IMAGE


@dataclass(frozen=True, slots=True)
class Capture:
    """istio-iptables options (`-b -d -o -i -x`) as the traffic.sidecar.istio.io annotations set them."""

    include_inbound_ports: str = "*"  # "*", "" (no inbound capture) or a port list
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    include_outbound_cidrs: str = "*"  # "*", "" (no outbound capture) or a CIDR list
    exclude_outbound_cidrs: tuple[str, ...] = ()


# ------------------------------------------------------------------------------- YAML out


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors: plain manifests out
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Block style for scripts and the bootstrap; $(VAR) values double-quoted, so that a
    # namespace named "true" or "123" stays a string after the kubelet substitutes it.
    style = "|" if "\n" in value else '"' if "$(" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_documents(docs: Iterable[Any]) -> str:
    return "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16,
                  allow_unicode=True)
        for doc in docs
    )


# ------------------------------------------------------------------------------- iptables


def iptables_rules(capture: Capture = Capture()) -> list[str]:
    """istio-iptables' REDIRECT-mode `nat` table as `iptables-restore` input, with the injector's
    default flags (`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020`)."""
    rules = [
        "*nat",
        ":ISTIO_INBOUND - [0:0]",
        ":ISTIO_REDIRECT - [0:0]",
        ":ISTIO_IN_REDIRECT - [0:0]",
        ":ISTIO_OUTPUT - [0:0]",
        f"-A ISTIO_INBOUND -p tcp --dport {TUNNEL_PORT} -j RETURN",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}",
    ]
    if capture.include_inbound_ports == "*":
        rules.append("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        excluded = dict.fromkeys((*DEFAULT_EXCLUDED_INBOUND, *capture.exclude_inbound_ports))
        rules += [f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN" for port in excluded]
        rules.append("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
    elif capture.include_inbound_ports:
        rules.append("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        rules += [f"-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT"
                  for port in _ports(capture.include_inbound_ports, A_IN_PORTS)]
    rules.append("-A OUTPUT -j ISTIO_OUTPUT")
    rules += [f"-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN" for port in capture.exclude_outbound_ports]
    for owner in ("uid", "gid"):
        if owner == "uid":
            rules.append("-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN")
        rules += [
            f"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport {TUNNEL_PORT} "
            f"-m owner --{owner}-owner {PROXY_UID} -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_OUTPUT -o lo -m owner ! --{owner}-owner {PROXY_UID} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --{owner}-owner {PROXY_UID} -j RETURN",
        ]
    rules.append("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN")
    rules += [f"-A ISTIO_OUTPUT -d {cidr} -j RETURN" for cidr in capture.exclude_outbound_cidrs]
    if capture.include_outbound_cidrs == "*":
        rules.append("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    elif capture.include_outbound_cidrs:
        rules += [f"-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT"
                  for cidr in _cidrs(capture.include_outbound_cidrs, A_IN_CIDRS)]
    rules.append("COMMIT")
    return rules


def init_script(capture: Capture) -> str:
    body = "\n".join(iptables_rules(capture))
    return f"set -e\niptables-restore --noflush <<'EOF'\n{body}\nEOF\niptables-save -t nat\n"


def _ports(text: str, annotation: str) -> tuple[int, ...]:
    out = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise InjectError(f"{annotation}: {item!r} is not a port number")
        out.append(int(item))
    return tuple(dict.fromkeys(out))


def _cidrs(text: str, annotation: str) -> tuple[str, ...]:
    out = []
    for item in (c.strip() for c in text.split(",")):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InjectError(f"{annotation}: {item!r} is not a CIDR") from None
        if net.version != 4:
            raise InjectError(f"{annotation}: {item!r}: only IPv4 ranges are captured")
        out.append(str(net))
    return tuple(dict.fromkeys(out))


def capture_from(annotations: dict[str, str]) -> Capture:
    include_in = annotations.get(A_IN_PORTS, "*").strip()
    if include_in not in ("*", ""):
        include_in = ",".join(map(str, _ports(include_in, A_IN_PORTS)))
    include_out = annotations.get(A_IN_CIDRS, "*").strip()
    if include_out not in ("*", ""):
        include_out = ",".join(_cidrs(include_out, A_IN_CIDRS))
    return Capture(
        include_inbound_ports=include_in,
        exclude_inbound_ports=_ports(annotations.get(A_EX_IN_PORTS, ""), A_EX_IN_PORTS),
        exclude_outbound_ports=_ports(annotations.get(A_EX_OUT_PORTS, ""), A_EX_OUT_PORTS),
        include_outbound_cidrs=include_out,
        exclude_outbound_cidrs=_cidrs(annotations.get(A_EX_CIDRS, ""), A_EX_CIDRS),
    )


# ------------------------------------------------------------------------------- containers


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _escape(value: str) -> str:
    """Kubernetes expands $(VAR) in args; a literal one is written $$(VAR)."""
    return value.replace("$(", "$$(")


def proxy_bootstrap(xds_address: str, labels: dict[str, str], interception: str) -> dict[str, Any]:
    """The Envoy bootstrap, with the kubelet's $(VAR) references standing for the pod's identity."""
    node_id = f"sidecar~$(INSTANCE_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.{DOMAIN_SUFFIX}"
    metadata: dict[str, Any] = {
        "NAMESPACE": "$(POD_NAMESPACE)",
        "INSTANCE_IPS": "$(INSTANCE_IPS)",
        "INTERCEPTION_MODE": interception,
        "LABELS": {_escape(k): _escape(v) for k, v in labels.items()},
    }
    try:
        boot = build_bootstrap(node_id, xds_address, ADMIN_PORT, metadata)
    except BootstrapError as e:
        raise InjectError(str(e)) from None
    admin_cluster = "envoy_admin"
    boot["static_resources"]["clusters"].append({
        "name": admin_cluster,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": admin_cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN_PORT}}}}]}]},
    })
    boot["static_resources"]["listeners"] = [
        _admin_listener("health", READY_PORT, "/healthz/ready", "/ready", admin_cluster),
        _admin_listener("prometheus", PROMETHEUS_PORT, "/stats/prometheus", "/stats/prometheus", admin_cluster),
    ]
    return boot


def _admin_listener(name: str, port: int, path: str, admin_path: str, cluster: str) -> dict[str, Any]:
    """0.0.0.0:<port> answering GET <path> from Envoy's admin <admin_path> (as Istio's 15021/15090)."""
    return {
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{
                    "name": name,
                    "domains": ["*"],
                    "routes": [{"match": {"path": path}, "route": {"cluster": cluster, "prefix_rewrite": admin_path}}],
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    }


def proxy_container(opts: Options, annotations: dict[str, str], labels: dict[str, str],
                    interception: str, native: bool) -> dict[str, Any]:
    bootstrap = yaml.dump(proxy_bootstrap(opts.xds_address, labels, interception), Dumper=_Dumper,
                          sort_keys=False, width=1 << 16)
    log_level = annotations.get(A_LOG_LEVEL, "warning")
    if log_level not in LOG_LEVELS:
        raise InjectError(f"{A_LOG_LEVEL}: {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    requests = {"cpu": annotations.get(A_CPU, "100m"), "memory": annotations.get(A_MEMORY, "128Mi")}
    limits = {"memory": annotations.get(A_MEMORY_LIMIT, "1Gi")}
    if A_CPU_LIMIT in annotations:
        limits = {"cpu": annotations[A_CPU_LIMIT], **limits}
    probe = {
        "httpGet": {"path": "/healthz/ready", "port": READY_PORT},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }
    container: dict[str, Any] = {
        "name": PROXY_CONTAINER,
        "image": annotations.get(A_PROXY_IMAGE, opts.proxy_image),
        "command": ["envoy"],
        "args": [
            "--config-yaml", bootstrap,
            "--log-level", log_level,
            "--concurrency", "2",
            "--drain-time-s", "45",
            "--disable-hot-restart",
        ],
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("INSTANCE_IP", "status.podIP"),
            _field_env("INSTANCE_IPS", "status.podIPs"),
        ],
        "ports": [{"name": "http-envoy-prom", "containerPort": PROMETHEUS_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if native:  # Kubernetes >= 1.29: starts before the app, stops after it, does not block Jobs
        container["restartPolicy"] = "Always"
        container["startupProbe"] = {**probe, "periodSeconds": 1, "failureThreshold": 600}
    return container


def init_container(opts: Options, capture: Capture) -> dict[str, Any]:
    return {
        "name": INIT_CONTAINER,
        "image": opts.init_image,
        "command": ["/bin/sh", "-c"],
        "args": [init_script(capture)],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": False,  # iptables takes /run/xtables.lock
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


# ------------------------------------------------------------------------------- pods


def _str_map(meta: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = meta.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InjectError(f"{where}.{key}: expected a map of strings")
    return value


def inject_pod(template: dict[str, Any], opts: Options, where: str) -> dict[str, Any]:
    """A copy of the pod (or pod template) with the sidecar added; unchanged if it opts out."""
    pod = copy.deepcopy(template)
    if pod.get("metadata") is None:
        pod["metadata"] = {}
    meta, spec = pod["metadata"], pod.get("spec")
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        raise InjectError(f"{where}: expected metadata and spec objects")
    labels = _str_map(meta, "labels", f"{where}.metadata")
    annotations = _str_map(meta, "annotations", f"{where}.metadata")
    if (annotations.get(A_INJECT) or labels.get(A_INJECT) or "").lower() == "false" or spec.get("hostNetwork"):
        return pod
    interception = annotations.get(A_INTERCEPTION, "REDIRECT").upper()
    if interception == "TPROXY":
        raise InjectError(f"{where}: {A_INTERCEPTION}: TPROXY is not supported by xds-server inject "
                          "(use REDIRECT or NONE)")
    if interception not in ("REDIRECT", "NONE"):
        raise InjectError(f"{where}: {A_INTERCEPTION}: {interception!r} is not REDIRECT or NONE")
    native = annotations.get(A_NATIVE, "").lower() == "true"
    try:
        capture = capture_from(annotations)
        proxy = proxy_container(opts, annotations, labels, interception, native)
    except InjectError as e:
        raise InjectError(f"{where}: {e}") from None

    ours = (PROXY_CONTAINER, INIT_CONTAINER)
    containers = [c for c in spec.get("containers") or [] if not (isinstance(c, dict) and c.get("name") in ours)]
    inits = [c for c in spec.get("initContainers") or [] if not (isinstance(c, dict) and c.get("name") in ours)]
    if not containers:
        raise InjectError(f"{where}.spec.containers: the pod has no container")
    if interception == "REDIRECT":
        inits.append(init_container(opts, capture))
    if native:
        inits.append(proxy)
    else:
        containers.append(proxy)
    spec["containers"] = containers
    if inits:
        spec["initContainers"] = inits
    else:
        spec.pop("initContainers", None)

    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    security = spec["securityContext"]
    if not isinstance(security.get("sysctls"), list):
        security["sysctls"] = []
    sysctls = security["sysctls"]
    if not any(isinstance(s, dict) and s.get("name") == UNPRIVILEGED_PORTS_SYSCTL for s in sysctls):
        sysctls.append({"name": UNPRIVILEGED_PORTS_SYSCTL, "value": "0"})

    annotations = meta.setdefault("annotations", {})
    annotations.pop(A_STATUS, None)
    annotations.setdefault(A_DEFAULT_CONTAINER, str(containers[0].get("name", "")))
    annotations.setdefault("prometheus.io/scrape", "true")
    annotations.setdefault("prometheus.io/port", str(PROMETHEUS_PORT))
    annotations.setdefault("prometheus.io/path", "/stats/prometheus")
    annotations[A_STATUS] = json.dumps({
        "initContainers": [INIT_CONTAINER] if interception == "REDIRECT" else [],
        "containers": [PROXY_CONTAINER],
        "volumes": [],
        "imagePullSecrets": None,
        "revision": "xds-server",
    }, separators=(",", ":"))
    return pod


def _get(doc: dict[str, Any], path: Iterable[str]) -> Any:
    node: Any = doc
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _describe(doc: dict[str, Any]) -> str:
    meta: dict[str, Any] = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{ns + '/' if ns else ''}{meta.get('name', '')}"


def inject_document(doc: Any, opts: Options, warn: Any = None) -> Any:
    """One manifest: workloads get the sidecar, Lists recurse, anything else passes through."""
    if not isinstance(doc, dict):
        return doc
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list)):
        return {**doc, "items": [inject_document(item, opts, warn) for item in doc.get("items") or []]}
    if kind not in POD_TEMPLATES:
        return doc
    path = POD_TEMPLATES[kind]
    where = _describe(doc)
    if not path:
        return inject_pod(doc, opts, where)
    template = _get(doc, path)
    if not isinstance(template, dict):
        raise InjectError(f"{where}: {'.'.join(path)}: expected a pod template")
    injected = inject_pod(template, opts, f"{where} {'.'.join(path)}")
    if warn and kind in ("Job", "CronJob"):
        annotations = injected["metadata"].get("annotations") or {}
        if A_STATUS in annotations and annotations.get(A_NATIVE, "").lower() != "true":
            warn(f"{where}: the Envoy container keeps a Job's pod running; "
                 f'annotate the template with {A_NATIVE}: "true" (Kubernetes >= 1.29)')
    out = copy.deepcopy(doc)
    parent = _get(out, path[:-1])
    parent[path[-1]] = injected
    return out


def inject_documents(docs: Iterable[Any], opts: Options, warn: Any = None) -> Iterator[Any]:
    for doc in docs:
        if doc is not None:
            yield inject_document(doc, opts, warn)


def run(args: argparse.Namespace) -> int:
    opts = Options(
        xds_address=args.xds_address,
        proxy_image=args.image,
        init_image=args.init_image or os.environ.get(INIT_IMAGE_ENV) or DEFAULT_INIT_IMAGE,
    )
    name = args.filename
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as e:
        print(f"xds-server inject: cannot read {name}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        print(f"xds-server inject: {name}: not YAML: {e}", file=sys.stderr)
        return 2

    def warn(message: str) -> None:
        print(f"xds-server inject: warning: {message}", file=sys.stderr)

    try:
        out = list(inject_documents(docs, opts, warn))
    except InjectError as e:
        print(f"xds-server inject: {name}: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(dump_documents(out))
    return 0
