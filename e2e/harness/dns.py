"""The node's DNS server: A records a test controls, for ServiceEntry resolution: DNS scenarios."""

from __future__ import annotations

import json
import os
from pathlib import Path

from e2e.harness.apps import PYTHON
from e2e.harness.netns import Netns, Proc

DNSSERVER = str(Path(__file__).resolve().parent / "dnsserver.py")


class Dns:
    def __init__(self, node: Netns, bind: str, port: int = 53) -> None:
        self.bind = bind
        self.port = port
        self.path = node.workdir / "dns-records.json"
        self.records: dict[str, list[str]] = {}
        self._write()
        self.proc: Proc = node.spawn("dns", [*PYTHON, DNSSERVER, "--bind", bind, "--port", str(port),
                                            "--records", str(self.path)], ready_line="READY")

    def set(self, name: str, *ips: str) -> None:
        """Answer A queries for `name` with `ips` (none: an empty answer; use remove() for NXDOMAIN)."""
        self.records[name.lower().rstrip(".")] = list(ips)
        self._write()

    def remove(self, name: str) -> None:
        self.records.pop(name.lower().rstrip("."), None)
        self._write()

    def _write(self) -> None:
        # Atomic replace: the server re-reads on mtime change and must never see half a file.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records))
        os.replace(tmp, self.path)

    def resolv_conf(self, namespace: str = "default", domain: str = "cluster.local") -> str:
        """A pod's resolv.conf as the kubelet writes it: search its namespace, then the cluster."""
        search = f"{namespace}.svc.{domain} svc.{domain} {domain}"
        return f"nameserver {self.bind}\nsearch {search}\noptions ndots:5 timeout:1 attempts:2\n"
