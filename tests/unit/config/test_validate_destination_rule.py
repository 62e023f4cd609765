"""istiod's DestinationRule rules with field paths (istio ValidateDestinationRule, agent.ValidateTLS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.config.util import errors_of, warnings_of
from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioDestinationRule
from xds_server.config.parse import parse

MANIFESTS = Path(__file__).parents[2] / "fixtures" / "manifests"


def dr(**spec: Any) -> dict[str, Any]:
    return {"host": "reviews", **spec}


def errors(spec: dict[str, Any]) -> list[str]:
    return errors_of("DestinationRule", spec)


def test_every_field_of_the_reference_parses_in_every_api_version() -> None:
    docs = list(yaml.safe_load_all((MANIFESTS / "traffic" / "destinationrule-every-field.yaml").read_text()))
    for version in ("v1", "v1beta1", "v1alpha3"):
        for doc in docs:
            obj, problems = parse({**doc, "apiVersion": f"networking.istio.io/{version}"}, "f.yaml:0")
            assert problems == [], (version, problems)
            assert isinstance(obj, IstioDestinationRule)
    obj, _ = parse(docs[0])
    assert isinstance(obj, IstioDestinationRule)
    policy = obj.spec.traffic_policy
    assert policy.load_balancer.consistent_hash.http_cookie.name == "user"
    assert policy.load_balancer.consistent_hash.ring_hash.minimum_ring_size == 2048
    distribute = policy.load_balancer.locality_lb_setting.distribute[0]
    assert dict(distribute.to) == {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
    assert policy.outlier_detection.consecutive_5xx_errors == 5
    assert policy.outlier_detection.HasField("consecutive_gateway_errors")
    assert policy.tls.mode == pb.ClientTLSSettings.MUTUAL and policy.tls.HasField("insecure_skip_verify")
    assert [p.port.number for p in policy.port_level_settings] == [9080, 9443]
    assert policy.port_level_settings[1].load_balancer.consistent_hash.maglev.table_size == 65537
    assert policy.retry_budget.min_retry_concurrency == 3
    assert [s.name for s in obj.spec.subsets] == ["v1", "v2"]
    assert obj.spec.subsets[1].traffic_policy.tunnel.target_port == 8443
    selector, _ = parse(docs[1])
    assert isinstance(selector, IstioDestinationRule)
    assert dict(selector.spec.workload_selector.match_labels) == {"app": "productpage"}


def test_the_seed_ratings_destination_rule_parses_with_its_port_level_tls() -> None:
    (doc,) = yaml.safe_load_all((MANIFESTS / "seed-inbound-tls" / "destinationrule-ratings-tls.yaml").read_text())
    obj, problems = parse(doc)
    assert problems == [] and isinstance(obj, IstioDestinationRule)
    levels = {p.port.number: p.tls for p in obj.spec.traffic_policy.port_level_settings}
    assert levels[9080].mode == pb.ClientTLSSettings.DISABLE
    assert (levels[9443].mode, levels[9443].ca_certificates) == (pb.ClientTLSSettings.SIMPLE, "/etc/certs/ca-certs.pem")


@pytest.mark.parametrize(
    ("spec", "messages"),
    [
        ({"host": ""}, ["spec.host: required"]),
        ({"host": "a.*.com"}, ["spec.host: domain name 'a.*.com' invalid (label '*' invalid)"]),
        (dr(subsets=[{"name": "v1"}, {"name": "v1"}]), ["spec.subsets[1].name: duplicate subset names: v1"]),
        (dr(subsets=[{"name": "v1.0", "labels": {"version": "v1"}}]),
         ["spec.subsets[0].name: subset name 'v1.0' is invalid (must be a DNS-1123 label)"]),
        (dr(subsets=[{"name": ""}]), ["spec.subsets[0].name: subset name cannot be empty"]),
        (dr(subsets=[{"name": "v1", "labels": {"version": "a b"}}]),
         ["spec.subsets[0].labels[version]: invalid label value 'a b'"]),
        (dr(trafficPolicy={}), ["spec.trafficPolicy: traffic policy must have at least one field"]),
        (dr(trafficPolicy={"portLevelSettings": [{"port": {"number": 80}}]}),
         ["spec.trafficPolicy.portLevelSettings[0]: port traffic policy must have at least one field"]),
        (dr(trafficPolicy={"portLevelSettings": [{"tls": {"mode": "SIMPLE"}}]}),
         ["spec.trafficPolicy.portLevelSettings[0].port: portTrafficPolicy must have valid port"]),
        (dr(trafficPolicy={"tunnel": {"targetHost": "a", "targetPort": 1}, "proxyProtocol": {}}),
         ["spec.trafficPolicy: tunnel and proxyProtocol must not be set together"]),
        (dr(trafficPolicy={"tunnel": {"protocol": "GET", "targetHost": "bad_host", "targetPort": 0}}),
         ['spec.trafficPolicy.tunnel.protocol: tunnel protocol must be "CONNECT" or "POST"',
          "spec.trafficPolicy.tunnel.targetHost: tunnel target host must be a valid FQDN or IP address: domain name "
          "'bad_host' invalid (label 'bad_host' invalid); 'bad_host' is not a valid IP address",
          "spec.trafficPolicy.tunnel.targetPort: port number 0 must be in the range 1..65535"]),
        (dr(trafficPolicy={"connectionPool": {}}),
         ["spec.trafficPolicy.connectionPool: connection pool must have at least one of tcp, http"]),
        (dr(trafficPolicy={"connectionPool": {"tcp": {"maxConnections": -1, "connectTimeout": "0s"}}}),
         ["spec.trafficPolicy.connectionPool.tcp.maxConnections: must be non-negative",
          "spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be at least 1ms"]),
        (dr(trafficPolicy={"outlierDetection": {"maxEjectionPercent": 101, "interval": "0.1ms",
                                                "consecutiveLocalOriginFailures": 3}}),
         ["spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: is set, but "
          "splitExternalLocalOriginErrors is false",
          "spec.trafficPolicy.outlierDetection.interval: duration must be at least 1ms",
          "spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 101 is not in range 0..100"]),
        (dr(trafficPolicy={"loadBalancer": {"consistentHash": {"httpCookie": {"ttl": "1s"}}}}),
         ["spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: name required for HttpCookie"]),
        (dr(trafficPolicy={"loadBalancer": {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 1000}}}}),
         ["spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime number "
          "for maglev"]),
        (dr(trafficPolicy={"loadBalancer": {"consistentHash": {"useSourceIp": True,
                                                               "maglev": {"tableSize": 5000011}}}}),
         ["spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be less than 5000011 "
          "for maglev"]),
        (dr(trafficPolicy={"loadBalancer": {"consistentHash": {"minimumRingSize": 10, "ringHash": {}}}}),
         ["spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: only one of minimumRingSize or "
          "maglev/ringHash can be set"]),
        (dr(trafficPolicy={"loadBalancer": {"simple": "FASTEST"}}),
         ["spec.trafficPolicy.loadBalancer.simple: unknown value 'FASTEST' (one of UNSPECIFIED, LEAST_CONN, RANDOM, "
          "PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST)"]),
        (dr(trafficPolicy={"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/*/c", "to": {"b": 90}}],
                                                                   "failover": [{"from": "a", "to": "a"}]}}}),
         ["spec.trafficPolicy.loadBalancer.localityLbSetting: can not simultaneously specify 'distribute' and "
          "'failover'",
          "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from: locality 'a/*/c': wildcard * must be "
          "the last part",
          "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: total weight 90 != 100",
          "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: locality lb failover settings must specify "
          "different regions"]),
        (dr(trafficPolicy={"tls": {"mode": "MUTUAL"}}),
         ["spec.trafficPolicy.tls.clientCertificate: client certificate required for mutual tls",
          "spec.trafficPolicy.tls.privateKey: private key required for mutual tls"]),
        (dr(trafficPolicy={"tls": {"mode": "SIMPLE", "insecureSkipVerify": True, "caCertificates": "/ca.pem"}}),
         ["spec.trafficPolicy.tls.insecureSkipVerify: cannot be true with caCertificates, credentialName or "
          "subjectAltNames"]),
        (dr(trafficPolicy={"tls": {"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/ca.pem"}}),
         ["spec.trafficPolicy.tls.credentialName: cannot specify client certificates or CA certificate or CA CRL if "
          "credentialName is set"]),
        (dr(subsets=[{"name": "v1", "trafficPolicy": {"tls": {"mode": "MUTUAL", "privateKey": "/k"}}}]),
         ["spec.subsets[0].trafficPolicy.tls.clientCertificate: client certificate required for mutual tls"]),
        (dr(workloadSelector={"matchLabels": {"app": "a"}}, exportTo=["*"]),
         ["spec.exportTo: destination rule with workload selector cannot have exportTo beyond current namespace"]),
        (dr(workloadSelector={"matchLabels": {"app": "a"}}, exportTo=[".", "other"]),
         ["spec.exportTo: destination rule with workload selector cannot have multiple entries in exportTo"]),
        (dr(workloadSelector={"matchLabels": {"app*": "a"}}),
         ["spec.workloadSelector.matchLabels[app*]: wildcard is not supported in selector: app*=a"]),
        (dr(workloadSelector={"labels": {"app": "a"}}), ["spec.workloadSelector.labels: unknown field"]),
        (dr(exportTo=[".", "ns"]), ["spec.exportTo[1]: duplicate exportTo entry 'ns' (. is the namespace ns)"]),
    ],
)
def test_destination_rule_rules(spec: dict[str, Any], messages: list[str]) -> None:
    assert errors(spec) == messages


def test_istio_mutual_is_accepted_with_a_warning_that_it_stays_plaintext() -> None:
    spec = dr(trafficPolicy={"tls": {"mode": "ISTIO_MUTUAL"}}, subsets=[{"name": "v1", "labels": {"v": "1"}}])
    assert errors(spec) == []
    assert warnings_of("DestinationRule", spec) == [
        "spec.trafficPolicy.tls.mode: ISTIO_MUTUAL needs Istio's mesh mTLS (its CA and agent), which does not exist "
        "in xds-server: connections for this policy stay plaintext"]
    port_level = dr(trafficPolicy={"portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "ISTIO_MUTUAL"}}]})
    assert [w.split(":")[0] for w in warnings_of("DestinationRule", port_level)] == [
        "spec.trafficPolicy.portLevelSettings[0].tls.mode"]


def test_deprecated_and_inert_settings_are_warnings() -> None:
    spec = dr(trafficPolicy={"outlierDetection": {"consecutiveErrors": 5},
                             "loadBalancer": {"consistentHash": {"useSourceIp": True, "minimumRingSize": 64}}},
              subsets=[{"name": "v1", "trafficPolicy": {
                  "loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b"}]}}}}],
              workloadSelector={"matchLabels": {}})
    assert errors(spec) == []
    assert warnings_of("DestinationRule", spec) == [
        "spec.trafficPolicy.outlierDetection.consecutiveErrors: deprecated; use consecutiveGatewayErrors or "
        "consecutive5xxErrors instead",
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: deprecated; use ringHash.minimumRingSize "
        "instead",
        "spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.failover: outlier detection policy must be "
        "provided for failover",
        "spec.workloadSelector: workload selector specified without labels; applies to every workload in the "
        "namespace",
    ]
