"""Istio's DestinationRule rules (istio/istio `pkg/config/validation/validation.go`
`ValidateDestinationRule`, `validateTrafficPolicy`, `validateLoadBalancer`,
`validateOutlierDetection`, `validateSubset`; `agent/validation.go` `ValidateTLS`,
`ValidateLocalityLbSetting`), with field paths.

xds-server has no mesh mTLS (no Istio CA, no agent, no SDS), so `ISTIO_MUTUAL` is accepted with a
warning and the connection stays plaintext; `credentialName` (an SDS secret) likewise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import validate_common as common
from xds_server.config.validate_fields import Report
from xds_server.config.validate_names import (
    fqdn_error,
    ip_error,
    label_key_error,
    label_value_error,
    port_error,
    wildcard_domain_error,
)
from xds_server.config.validate_virtual_service import subset_name_error

_TLS = pb.ClientTLSSettings
MAGLEV_TABLE_LIMIT = 5000011


def validate_destination_rule(spec: pb.DestinationRule, namespace: str, report: Report) -> None:
    if not spec.host:
        report.error("spec.host", "required")
    else:
        report.check("spec.host", wildcard_domain_error(spec.host))
    if spec.HasField("traffic_policy"):
        traffic_policy(spec.traffic_policy, "spec.trafficPolicy", report)
    names: set[str] = set()
    for i, subset in enumerate(spec.subsets):
        path = f"spec.subsets[{i}]"
        if subset.name in names:
            report.error(f"{path}.name", f"duplicate subset names: {subset.name}")
        names.add(subset.name)
        report.check(f"{path}.name", subset_name_error(subset.name))
        _labels(subset.labels, f"{path}.labels", report)
        if subset.HasField("traffic_policy"):
            traffic_policy(subset.traffic_policy, f"{path}.trafficPolicy", report)
    selector = spec.HasField("workload_selector")
    common.export_to(list(spec.export_to), namespace, "spec.exportTo", report, service_entry=False)
    if selector and spec.export_to:
        keys = {namespace if v == "." else v for v in spec.export_to}
        if namespace not in keys:
            report.error("spec.exportTo", "destination rule with workload selector cannot have exportTo beyond "
                         "current namespace")
        elif len(keys) > 1:
            report.error("spec.exportTo", "destination rule with workload selector cannot have multiple entries "
                         "in exportTo")
    if selector:
        common.selector_labels(sorted(spec.workload_selector.match_labels.items()), "spec.workloadSelector.matchLabels",
                               "spec.workloadSelector", report, "every workload in the namespace")


def _labels(labels: Mapping[str, str], path: str, report: Report) -> None:
    for key, value in sorted(labels.items()):
        report.check(f"{path}[{key}]", label_key_error(key) or label_value_error(value))


# ---------------------------------------------------------------- traffic policy
def traffic_policy(policy: pb.TrafficPolicy, path: str, report: Report) -> None:
    if not any(policy.HasField(f) for f in ("outlier_detection", "connection_pool", "load_balancer", "tls",
                                            "tunnel", "proxy_protocol", "retry_budget")) \
            and not policy.port_level_settings:
        report.error(path, "traffic policy must have at least one field")
        return
    if policy.HasField("tunnel") and policy.HasField("proxy_protocol"):
        report.error(path, "tunnel and proxyProtocol must not be set together")
        return
    _blocks(policy, path, report)
    for i, port_policy in enumerate(policy.port_level_settings):
        here = f"{path}.portLevelSettings[{i}]"
        if not port_policy.HasField("port"):
            report.error(f"{here}.port", "portTrafficPolicy must have valid port")
        else:
            report.check(f"{here}.port.number", port_error(port_policy.port.number))
        if not any(port_policy.HasField(f) for f in ("outlier_detection", "connection_pool", "load_balancer", "tls")):
            report.error(here, "port traffic policy must have at least one field")
        else:
            _blocks(port_policy, here, report)
    if policy.HasField("tunnel"):
        _tunnel(policy.tunnel, f"{path}.tunnel", report)
    if policy.HasField("retry_budget"):
        budget = policy.retry_budget
        if not 0.0 <= budget.percent <= 100.0:
            report.error(f"{path}.retryBudget.percent", f"{budget.percent:g} is not in range 0..100")


def _blocks(policy: pb.TrafficPolicy | pb.TrafficPolicy.PortTrafficPolicy, path: str, report: Report) -> None:
    if policy.HasField("outlier_detection"):
        _outlier(policy.outlier_detection, f"{path}.outlierDetection", report)
    if policy.HasField("connection_pool"):
        common.connection_pool(policy.connection_pool, f"{path}.connectionPool", report)
    if policy.HasField("load_balancer"):
        _load_balancer(policy.load_balancer, policy.HasField("outlier_detection"), f"{path}.loadBalancer", report)
    if policy.HasField("tls"):
        client_tls(policy.tls, f"{path}.tls", report)


def _tunnel(tunnel: pb.TrafficPolicy.TunnelSettings, path: str, report: Report) -> None:
    if tunnel.protocol not in ("", "CONNECT", "POST"):
        report.error(f"{path}.protocol", 'tunnel protocol must be "CONNECT" or "POST"')
    fqdn, ip = fqdn_error(tunnel.target_host), ip_error(tunnel.target_host)
    if fqdn and ip:
        report.error(f"{path}.targetHost", f"tunnel target host must be a valid FQDN or IP address: {fqdn}; {ip}")
    report.check(f"{path}.targetPort", port_error(tunnel.target_port))


def _outlier(outlier: pb.OutlierDetection, path: str, report: Report) -> None:
    if outlier.HasField("base_ejection_time"):
        common.duration(outlier.base_ejection_time, f"{path}.baseEjectionTime", report)
    if outlier.consecutive_errors:
        report.warn(f"{path}.consecutiveErrors",
                    "deprecated; use consecutiveGatewayErrors or consecutive5xxErrors instead")
    if not outlier.split_external_local_origin_errors and outlier.consecutive_local_origin_failures > 0:
        report.error(f"{path}.consecutiveLocalOriginFailures",
                     "is set, but splitExternalLocalOriginErrors is false")
    if outlier.HasField("interval"):
        common.duration(outlier.interval, f"{path}.interval", report)
    for name, value in (("maxEjectionPercent", outlier.max_ejection_percent),
                        ("minHealthPercent", outlier.min_health_percent)):
        if not 0 <= value <= 100:
            report.error(f"{path}.{name}", f"percentage {value} is not in range 0..100")


def _load_balancer(lb: pb.LoadBalancerSettings, has_outlier: bool, path: str, report: Report) -> None:
    if lb.HasField("consistent_hash"):
        ch, here = lb.consistent_hash, f"{path}.consistentHash"
        if ch.HasField("http_cookie") and not ch.http_cookie.name:
            report.error(f"{here}.httpCookie.name", "name required for HttpCookie")
        if ch.HasField("http_cookie") and ch.http_cookie.HasField("ttl") and (
                ch.http_cookie.ttl.seconds < 0 or ch.http_cookie.ttl.nanos < 0):
            report.error(f"{here}.httpCookie.ttl", "must not be negative")
        if ch.minimum_ring_size:
            report.warn(f"{here}.minimumRingSize", "deprecated; use ringHash.minimumRingSize instead")
            if ch.WhichOneof("hash_algorithm"):
                report.error(f"{here}.minimumRingSize", "only one of minimumRingSize or maglev/ringHash can be set")
        if ch.HasField("maglev"):
            size = ch.maglev.table_size
            if size == 0:
                report.error(f"{here}.maglev.tableSize", "tableSize must be set for maglev")
            if size >= MAGLEV_TABLE_LIMIT:
                report.error(f"{here}.maglev.tableSize", f"tableSize must be less than {MAGLEV_TABLE_LIMIT} for maglev")
            if not _is_prime(size):
                report.error(f"{here}.maglev.tableSize", "tableSize must be a prime number for maglev")
    if lb.HasField("locality_lb_setting"):
        _locality(lb.locality_lb_setting, has_outlier, f"{path}.localityLbSetting", report)
    if lb.HasField("warmup_duration_secs"):
        common.duration(lb.warmup_duration_secs, f"{path}.warmupDurationSecs", report)
    if lb.HasField("warmup"):
        warmup = lb.warmup
        if not warmup.HasField("duration"):
            report.error(f"{path}.warmup.duration", "required")
        else:
            common.duration(warmup.duration, f"{path}.warmup.duration", report)
        if warmup.HasField("minimum_percent") and not 0 <= warmup.minimum_percent <= 100:
            report.error(f"{path}.warmup.minimumPercent", "must be in range 0..100")
        if warmup.HasField("aggression") and warmup.aggression < 1:
            report.error(f"{path}.warmup.aggression", "must be at least 1")
        if lb.HasField("warmup_duration_secs"):
            report.error(f"{path}.warmup", "only one of warmup or warmupDurationSecs can be set")


def _is_prime(x: int) -> bool:
    """Envoy's primality test (source/common/common/utility.cc), as istiod copies it."""
    if x != 0 and x < 4:
        return True
    if x & 1 == 0:
        return False
    return all(x % factor for factor in range(3, math.isqrt(x) + 1, 2))


def _locality(setting: pb.LocalityLoadBalancerSetting, has_outlier: bool, path: str, report: Report) -> None:
    """`ValidateLocalityLbSetting`: distribute weights sum to 100 per source; failover needs outliers."""
    if setting.distribute and setting.failover:
        report.error(path, "can not simultaneously specify 'distribute' and 'failover'")
    if setting.failover and not has_outlier:
        report.warn(f"{path}.failover", "outlier detection policy must be provided for failover")
    for i, dist in enumerate(setting.distribute):
        here = f"{path}.distribute[{i}]"
        report.check(f"{here}.from", _locality_error(getattr(dist, "from")))  # `from` is a Python keyword
        total = 0
        for loc, weight in sorted(dist.to.items()):
            report.check(f"{here}.to[{loc}]", _locality_error(loc))
            total += weight
        if total != 100:
            report.error(f"{here}.to", f"total weight {total} != 100")
    for i, fo in enumerate(setting.failover):
        here = f"{path}.failover[{i}]"
        source, target = getattr(fo, "from"), fo.to
        if source == target:
            report.error(here, "locality lb failover settings must specify different regions")
        if "/" in source or "*" in source:
            report.error(f"{here}.from", "locality lb failover only specify region")
        if "/" in target or "*" in target:
            report.error(f"{here}.to", "locality lb failover only specify region")


def _locality_error(locality: str) -> str | None:
    """`region/zone/subzone`, `*` only as the last part, no empty parts."""
    if locality == "":
        return "empty locality"
    parts = locality.split("/")
    if len(parts) > 3:
        return f"locality {locality!r} has more than region/zone/subzone"
    for i, part in enumerate(parts):
        if part == "":
            return f"locality {locality!r} has an empty part"
        if part == "*" and i != len(parts) - 1:
            return f"locality {locality!r}: wildcard * must be the last part"
    return None


# ---------------------------------------------------------------- client TLS
def client_tls(tls: pb.ClientTLSSettings, path: str, report: Report) -> None:
    """`agent.ValidateTLS`, plus xds-server's warnings for what needs mesh mTLS or SDS."""
    if tls.HasField("insecure_skip_verify") and tls.insecure_skip_verify:
        if tls.mode == _TLS.SIMPLE and (tls.ca_certificates or tls.credential_name or tls.subject_alt_names):
            report.error(f"{path}.insecureSkipVerify",
                         "cannot be true with caCertificates, credentialName or subjectAltNames")
        if tls.mode == _TLS.MUTUAL and (tls.ca_certificates or tls.subject_alt_names):
            report.error(f"{path}.insecureSkipVerify", "cannot be true with caCertificates or subjectAltNames")
    if tls.mode == _TLS.ISTIO_MUTUAL:
        report.warn(f"{path}.mode", "ISTIO_MUTUAL needs Istio's mesh mTLS (its CA and agent), which does not "
                    "exist in xds-server: connections for this policy stay plaintext")
        return
    if tls.mode in (_TLS.SIMPLE, _TLS.MUTUAL) and tls.credential_name:
        if tls.client_certificate or tls.ca_certificates or tls.private_key or tls.ca_crl:
            report.error(f"{path}.credentialName",
                         "cannot specify client certificates or CA certificate or CA CRL if credentialName is set")
        report.warn(f"{path}.credentialName", "credentials from secrets (SDS) are not available in xds-server: "
                    "this TLS block is ignored and connections for this policy stay plaintext")
        return
    if tls.mode == _TLS.MUTUAL:
        if not tls.client_certificate:
            report.error(f"{path}.clientCertificate", "client certificate required for mutual tls")
        if not tls.private_key:
            report.error(f"{path}.privateKey", "private key required for mutual tls")
