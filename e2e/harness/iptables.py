"""istio-init's REDIRECT capture, rule for rule (istio `tools/istio-iptables/pkg/capture/run.go`).

Equivalent of `istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*'
-d 15090,15021,15020` plus the Envoy admin port 15000 excluded from inbound capture (Istio's
agent keeps admin on loopback; ours is reached from inside the pod, never captured anyway).
Applied atomically with one `iptables-restore` in the pod namespace.
"""

from __future__ import annotations

from collections.abc import Sequence

from e2e.harness.netns import Netns

ENVOY_UID = 1337
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
TUNNEL_PORT = 15008
EXCLUDED_INBOUND = (15090, 15021, 15020, 15000)


def istio_rules(
    *,
    proxy_port: int = OUTBOUND_PORT,
    inbound_port: int = INBOUND_PORT,
    uid: int = ENVOY_UID,
    gid: int = ENVOY_UID,
    excluded_inbound: Sequence[int] = EXCLUDED_INBOUND,
) -> list[str]:
    """The nat-table rules in istio-iptables' order, as `-A CHAIN ...` lines.

    Options within a rule are written in iptables-save's canonical order (`-s`/`-d` before `-o`),
    so the live table can be compared with this list; the matches are exactly istio-iptables'.
    """
    rules = [
        f"-A ISTIO_INBOUND -p tcp --dport {TUNNEL_PORT} -j RETURN",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {proxy_port}",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {inbound_port}",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    ]
    rules += [f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN" for port in excluded_inbound]
    rules += [
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A OUTPUT -j ISTIO_OUTPUT",
        # Inbound passthrough connects to the app from 127.0.0.6: never capture it again.
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        # Envoy calling its own pod IP over lo (app -> own Service) goes to inbound.
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp ! --dport {TUNNEL_PORT} "
        f"-m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp ! --dport {TUNNEL_PORT} "
        f"-m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ]
    return rules


def restore_input(rules: Sequence[str]) -> str:
    chains = ["ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"]
    lines = ["*nat"]
    lines += [f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")]
    lines += [f":{c} - [0:0]" for c in chains]
    lines += list(rules)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def apply(ns: Netns, rules: Sequence[str] | None = None) -> None:
    ns.exec("iptables-restore", stdin=restore_input(istio_rules() if rules is None else rules))


def nat_rules(ns: Netns) -> list[str]:
    """The live `-A` lines of the nat table, normalised the way we write them."""
    out = ns.exec("iptables-save", "-t", "nat")
    return [normalise(line) for line in out.splitlines() if line.startswith("-A ")]


def normalise(rule: str) -> str:
    # iptables-save spells implicit matches out (`-p tcp -m tcp --dport`); drop the extra module.
    return " ".join(rule.replace(" -m tcp", "").split())


def by_chain(rules: Sequence[str]) -> dict[str, list[str]]:
    """Rules grouped per chain, in order: iptables-save lists chains in its own order."""
    out: dict[str, list[str]] = {}
    for rule in rules:
        out.setdefault(rule.split()[1], []).append(normalise(rule))
    return out
