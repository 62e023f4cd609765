"""deploy/rbac.yaml grants exactly what the Kubernetes source reads (offline; the same against a
real apiserver, as effective permissions, in tests/kube/test_deploy.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from xds_server.sources.kube_kinds import READ_VERBS, required_permissions

RBAC = Path(__file__).resolve().parents[3] / "deploy" / "rbac.yaml"


def test_cluster_role_is_exactly_get_list_watch_on_the_watched_kinds() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(RBAC.read_text())}
    granted = {
        (group, resource)
        for rule in docs["ClusterRole"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == set(required_permissions())
    assert all(sorted(rule["verbs"]) == sorted(READ_VERBS) for rule in docs["ClusterRole"]["rules"])


def test_the_binding_ties_the_role_to_the_service_account() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(RBAC.read_text())}
    account = docs["ServiceAccount"]["metadata"]
    assert (account["name"], account["namespace"]) == ("xds-server", "xds-system")
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": docs["ClusterRole"]["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "xds-server", "namespace": "xds-system"}]
