"""deploy/ against a real apiserver: the kustomizations apply (server-side dry run, then for real),
the server runs with a token of deploy/'s ServiceAccount and syncs, and that account can do
exactly what the Kubernetes source needs (derived from xds_server/sources/kube_kinds.py, so a
newly watched kind without its RBAC rule fails here) and nothing more.

The `deployed` fixture (tests/kube/conftest.py) applies deploy/ (tests/kube/deployed.py).
"""

from __future__ import annotations

import pytest

from tests.kube.deployed import NAMESPACE
from tests.kube.envtest import EnvTest
from tests.kube.serve import ServeProcess
from tests.kube.source_harness import service, service_entry, sidecar
from xds_server.sources.kube_kinds import required_permissions

# Read access every authenticated user has by default (system:basic-user, system:discovery,
# system:public-info-viewer): reviews of one's own access, discovery.
SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
                ("authorization.k8s.io", "selfsubjectrulesreviews"), ("authentication.k8s.io", "selfsubjectreviews")}


def resource_rules(kube_api: EnvTest, token: str, namespace: str) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs this token may use in `namespace` (SelfSubjectRulesReview: what
    `kubectl auth can-i --list` shows), resourceNames-restricted rules left out."""
    review = kube_api.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                              {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                               "spec": {"namespace": namespace}}, token=token)
    assert not review["status"].get("incomplete"), review["status"]
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in review["status"]["resourceRules"]:
        if rule.get("resourceNames"):
            continue
        for group in rule.get("apiGroups", ()):
            for resource in rule.get("resources", ()):
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return rules


def allowed(kube_api: EnvTest, token: str, verb: str, resource: str, group: str = "", namespace: str = "",
            subresource: str = "") -> bool:
    review = kube_api.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                              {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                               "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                                               "namespace": namespace,
                                                               "subresource": subresource}}}, token=token)
    return bool(review["status"]["allowed"])


def test_the_service_account_may_read_what_the_source_watches_and_nothing_more(
    kube_api: EnvTest, deployed: str, kube_namespace: str
) -> None:
    required = {key: set(verbs) for key, verbs in required_permissions().items()}
    for namespace in (kube_namespace, NAMESPACE, "istio-system"):
        granted = resource_rules(kube_api, deployed, namespace)
        extra = {key: verbs for key, verbs in granted.items() if key not in SELF_REVIEWS}
        assert extra == required, f"in namespace {namespace}: granted {extra}, the source needs {required}"
    # Cluster-wide (the source watches every namespace) and for cluster-scoped namespaces.
    for (group, plural), verbs in required.items():
        for verb in verbs:
            assert allowed(kube_api, deployed, verb, plural, group), f"cannot {verb} {plural}.{group}"


@pytest.mark.parametrize(("verb", "resource", "group", "subresource"), [
    ("create", "pods", "", ""),
    ("delete", "pods", "", ""),
    ("update", "pods", "", "status"),
    ("create", "pods", "", "exec"),
    ("get", "secrets", "", ""),
    ("list", "secrets", "", ""),
    ("update", "configmaps", "", ""),
    ("create", "sidecars", "networking.istio.io", ""),
    ("delete", "serviceentries", "networking.istio.io", ""),
    ("create", "serviceaccounts", "", "token"),
    ("list", "customresourcedefinitions", "apiextensions.k8s.io", ""),
    ("update", "clusterroles", "rbac.authorization.k8s.io", ""),
])
def test_the_service_account_cannot_write_or_read_secrets(
    kube_api: EnvTest, deployed: str, verb: str, resource: str, group: str, subresource: str
) -> None:
    for namespace in ("", NAMESPACE):
        assert not allowed(kube_api, deployed, verb, resource, group, namespace, subresource)


def test_kubectl_auth_can_i_agrees(kube_api: EnvTest, deployed: str) -> None:
    def can_i(*args: str) -> str:
        return kube_api.kubectl("auth", "can-i", *args, token=deployed, check=False).stdout.strip()

    assert can_i("create", "pods", "-A") == "no"
    assert can_i("get", "secrets", "-n", NAMESPACE) == "no"
    assert can_i("watch", "sidecars.networking.istio.io", "-A") == "yes"
    listed = kube_api.kubectl("auth", "can-i", "--list", "-n", NAMESPACE, token=deployed).stdout
    assert "secrets" not in listed and "serviceentries.networking.istio.io" in listed


def test_the_server_syncs_with_the_service_accounts_token(
    kube_api: EnvTest, deployed: str, kube_namespace: str
) -> None:
    kube_api.create(sidecar("default", kube_namespace))
    kube_api.create(service_entry("ext", kube_namespace))
    kube_api.create(service("web", kube_namespace))
    with ServeProcess("--kubeconfig", str(kube_api.kubeconfig(deployed))) as server:
        server.wait_ready()
        assert server.objects(kube_namespace) == {"Sidecar/default", "ServiceEntry/ext", "Service/web"}
        output = server.output()
        assert "forbidden" not in output.lower() and "not authenticated" not in output, output
        assert server.stop() == 0
