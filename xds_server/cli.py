"""Command line: argparse and exit codes only; each command lives in xds_server/commands/."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("unix:"):  # a unix socket path, e.g. unix:///run/xds.sock
        return text, 0
    from xds_server.config.address import host_port

    found = host_port(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT ([ADDR]:PORT for IPv6), got {text!r}")
    return found[0] or "0.0.0.0", found[1]


class _VersionAction(argparse.Action):
    """`--version`: the installed package's version (its metadata), looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        try:
            version = importlib.metadata.version("xds-server")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"{parser.prog} {version}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xds-server", description="An Istio-compatible xDS control plane")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve xDS from a manifest directory and/or Kubernetes")
    serve.add_argument("--config-dir", metavar="DIR", help="watch *.yaml/*.yml/*.json below DIR")
    serve.add_argument("--kubernetes", action="store_true", help="watch the Kubernetes API")
    serve.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (implies --kubernetes)")
    serve.add_argument("--namespace", action="append", default=[], metavar="NS",
                       help="restrict the Kubernetes watch (repeatable)")
    serve.add_argument("--mesh-config", metavar="FILE", help="MeshConfig YAML")
    serve.add_argument("--xds-address", type=_host_port, default=("0.0.0.0", 15010), metavar="HOST:PORT")
    serve.add_argument("--admin-address", type=_host_port, default=("127.0.0.1", 15014), metavar="HOST:PORT")
    serve.add_argument("--domain-suffix", default="cluster.local")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve xDS over TLS with this certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
    serve.add_argument("--client-ca", metavar="FILE",
                       help="mutual TLS: require client certificates signed by this CA; a certificate's SPIFFE "
                            "(spiffe://TD/ns/NS/sa/SA) or DNS (SA.NS.svc) identity must match the node's namespace "
                            "and the Pod's service account, else PERMISSION_DENIED")
    serve.add_argument("--debounce-quiet", type=float, default=0.1, metavar="SECONDS",
                       help="push after this long without changes (default 0.1)")
    serve.add_argument("--debounce-max", type=float, default=1.0, metavar="SECONDS",
                       help="push at the latest this long after the first change (default 1.0)")
    serve.add_argument("--drain-seconds", type=float, default=5.0, metavar="SECONDS",
                       help="graceful drain on SIGTERM (default 5)")
    serve.add_argument("--max-connection-age", type=float, default=0.0, metavar="SECONDS",
                       help="close xDS connections after this age (+-10 %% jitter) to rebalance replicas (0: never)")
    serve.add_argument("--max-connection-age-grace", type=float, default=10.0, metavar="SECONDS",
                       help="after --max-connection-age, close the connection this long after its GOAWAY; "
                            "Envoy then reconnects to any replica (default 10, as istiod)")
    serve.add_argument("--max-new-streams-per-second", type=float, default=200.0, metavar="N",
                       help="admit at most N new xDS streams per second (plus --new-stream-burst); beyond it "
                            "streams wait up to --max-admission-wait, then are refused with RESOURCE_EXHAUSTED and "
                            "Envoy retries (default 200; 0: unlimited)")
    serve.add_argument("--new-stream-burst", type=int, default=400, metavar="N",
                       help="new xDS streams admitted at once before the rate applies (default 400)")
    serve.add_argument("--max-admission-wait", type=float, default=10.0, metavar="SECONDS",
                       help="longest a new stream waits for its turn before RESOURCE_EXHAUSTED (default 10: a "
                            "waiting stream costs a coroutine, a refused one a reconnect and Envoy's growing backoff)")
    serve.add_argument("--max-receive-bytes", type=int, default=32 * 1024 * 1024, metavar="BYTES",
                       help="largest xDS request accepted (default 32 MiB: Envoy's node plus big delta "
                            "subscriptions)")
    serve.add_argument("--send-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="give up a stream whose reader has not taken a response for this long (default 60; "
                            "a slow reader never delays other streams, so this only reclaims stuck ones)")
    serve.add_argument("--max-bytes-in-flight", type=int, default=128 * 1024 * 1024, metavar="BYTES",
                       help="bound on response bytes built and not yet sent, over all xDS streams; streams "
                            "beyond it wait their turn, oldest first (default 128 MiB; 0: no bound)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="N worker processes serving one xDS port (SO_REUSEPORT), each a complete server, "
                            "one admin endpoint merging their metrics and debug views (default 1; "
                            "docs/operations.md says when to use workers and when replicas)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by --workers
    serve.add_argument("--keepalive-interval", type=float, default=30.0, metavar="SECONDS",
                       help="ping idle xDS connections this often (default 30)")
    serve.add_argument("--keepalive-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="close a connection whose ping is not answered within this (default 10)")
    serve.add_argument("--min-client-ping-interval", type=float, default=15.0, metavar="SECONDS",
                       help="accept client keepalive pings this often; faster pingers get GOAWAY "
                            "too_many_pings (default 15: Envoy's bootstrap pings every 30)")
    _logging_flags(serve)

    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a node")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--xds-address", default="127.0.0.1:15010", metavar="HOST:PORT")
    boot.add_argument("--admin-port", type=int, default=15000)
    boot.add_argument("--admin-address", default="127.0.0.1", help="address the Envoy admin binds")
    boot.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                      help="node metadata (repeatable; VALUE may be JSON, e.g. LABELS={\"app\":\"a\"})")
    boot.add_argument("--cluster", default="", help="node.cluster (default: derived from the node id)")
    boot.add_argument("--format", choices=("yaml", "json"), default="yaml")
    boot.add_argument("--sotw", action="store_true", help="state-of-the-world ADS instead of delta")
    boot.add_argument("--tls-ca", metavar="FILE", help="verify the server with this CA")
    boot.add_argument("--tls-cert", metavar="FILE", help="client certificate for mTLS")
    boot.add_argument("--tls-key", metavar="FILE", help="client key for mTLS")
    boot.add_argument("--tls-server-name", metavar="NAME", help="SNI / name to verify on the server")

    val = sub.add_parser("validate", help="check manifests; one line per problem")
    val.add_argument("paths", nargs="+", metavar="PATH")

    ren = sub.add_parser("render", help="print the resources a proxy would get")
    ren.add_argument("--config-dir", required=True, metavar="DIR")
    ren.add_argument("--proxy", required=True, metavar="POD.NAMESPACE")
    ren.add_argument("--type", choices=("lds", "rds", "cds", "eds", "all", "rules"), default="all",
                     help="an xDS type, all four (default), or `rules`: which VirtualService routes each host "
                          "and which DestinationRule applies to each service for this proxy")
    ren.add_argument("--mesh-config", metavar="FILE")
    ren.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")

    inj = sub.add_parser("inject", help="add an Envoy sidecar and iptables init container to workloads")
    inj.add_argument("-f", "--filename", required=True, metavar="FILE", help="manifest file, or - for stdin")
    inj.add_argument("--xds-address", default="xds-server.xds-system.svc:15010", metavar="HOST:PORT")
    inj.add_argument("--image", default="envoyproxy/envoy:v1.40.0", help="sidecar image")
    inj.add_argument("--init-image", default=None,
                     help="image of the iptables init container (default: $XDS_INJECT_INIT_IMAGE or xds-server:0.1.0)")

    demo = sub.add_parser("demo", help="run the bundled example mesh with local Envoys")
    demo.add_argument("--xds-address", type=_host_port, default=("127.0.0.1", 15010), metavar="HOST:PORT")
    demo.add_argument("--admin-address", type=_host_port, default=("127.0.0.1", 15014), metavar="HOST:PORT")
    demo.add_argument("--exit-after-check", action="store_true",
                      help="run every printed curl once, report, and exit (for tests)")
    _logging_flags(demo)
    return parser


def _logging_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="text", choices=("text", "json"))


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])  # `serve --workers` passes them on
    module = importlib.import_module(f"xds_server.commands.{args.command}")
    try:
        code = module.run(args)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
