"""DestinationRule `outlierDetection` -> Envoy cluster outlier_detection (istiod's
`pilot/pkg/networking/core/cluster_traffic_policy.go` applyOutlierDetection).

Only a resolved `outlierDetection` block emits anything. Success-rate ejection is always off;
a consecutive-error count that is set is enforced 100% (0% when the count is 0); fields left
unset take Envoy's defaults (`outlier_detection.proto`: 5 consecutive 5xx enforced, gateway
failures counted but not enforced, 10s interval, 30s base ejection, 10% max ejection), so
`outlierDetection: {}` still ejects after five 5xx. The deprecated `consecutiveErrors` is ignored,
as in istiod. `healthy_panic_threshold` is always written with `minHealthPercent` (0 turns
Envoy's 50% panic mode off, istiod's choice for Kubernetes services with few pods).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2

from xds_server._proto import istio_config_pb2 as pb
from xds_server.translate import envoy

ENFORCED = 100


def _enforcing(count: int) -> int:
    return ENFORCED if count > 0 else 0


def apply_outlier_detection(cluster: cluster_pb2.Cluster, outlier: pb.OutlierDetection | None) -> None:
    if outlier is None:
        return
    out = outlier_detection_pb2.OutlierDetection(enforcing_success_rate=envoy.u32(0))
    if outlier.HasField("consecutive_5xx_errors"):
        count = outlier.consecutive_5xx_errors
        out.consecutive_5xx.value = count
        out.enforcing_consecutive_5xx.value = _enforcing(count)
    if outlier.HasField("consecutive_gateway_errors"):
        count = outlier.consecutive_gateway_errors
        out.consecutive_gateway_failure.value = count
        out.enforcing_consecutive_gateway_failure.value = _enforcing(count)
    if outlier.HasField("interval"):
        out.interval.CopyFrom(outlier.interval)
    if outlier.HasField("base_ejection_time"):
        out.base_ejection_time.CopyFrom(outlier.base_ejection_time)
    if outlier.max_ejection_percent > 0:
        out.max_ejection_percent.value = outlier.max_ejection_percent
    if outlier.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if outlier.consecutive_local_origin_failures > 0:
            out.consecutive_local_origin_failure.value = outlier.consecutive_local_origin_failures
            out.enforcing_consecutive_local_origin_failure.value = ENFORCED
        out.enforcing_local_origin_success_rate.value = 0
    cluster.outlier_detection.CopyFrom(out)
    if outlier.min_health_percent >= 0:
        cluster.common_lb_config.healthy_panic_threshold.value = float(outlier.min_health_percent)
