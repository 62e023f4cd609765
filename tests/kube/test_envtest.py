"""The envtest fixture itself: a real apiserver with RBAC, tokens, Pod status written by hand.
Its faults (restart, compaction -> 410) are proven where they are used, in test_kube_source.py."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

from tests.kube.envtest import ApiError, EnvTest


def pod(namespace: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": "app"}]}}


def test_pod_status_is_written_through_the_status_subresource(kube_api: EnvTest, kube_namespace: str) -> None:
    created = kube_api.create(pod(kube_namespace, "p"))
    assert created["status"]["phase"] == "Pending"  # no scheduler, no kubelet
    kube_api.set_pod_status(kube_namespace, "p", "198.18.7.7")
    got = kube_api.get(pod(kube_namespace, "p"))
    assert got["status"]["podIP"] == "198.18.7.7"
    assert {"type": "Ready", "status": "True"}.items() <= got["status"]["conditions"][-1].items()
    kube_api.set_pod_status(kube_namespace, "p", "198.18.7.7", ready=False)
    ready = {c["type"]: c["status"] for c in kube_api.get(pod(kube_namespace, "p"))["status"]["conditions"]}
    assert ready["Ready"] == "False"


def test_service_account_tokens_are_subject_to_rbac(kube_api: EnvTest, kube_namespace: str) -> None:
    kube_api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader",
                                                                                 "namespace": kube_namespace}})
    token = kube_api.token_for(kube_namespace, "reader")
    with pytest.raises(ApiError) as denied:
        kube_api.request("GET", f"/api/v1/namespaces/{kube_namespace}/pods", token=token)
    assert denied.value.status == 403
    who = kube_api.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, token=token)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{kube_namespace}:reader"
    # kubectl with a kubeconfig from the fixture sees the same answer.
    assert kube_api.kubectl("auth", "can-i", "list", "pods", "-n", kube_namespace,
                            token=token, check=False).stdout.strip() == "no"
    assert kube_api.kubectl("auth", "can-i", "list", "pods", "-n", kube_namespace).stdout.strip() == "yes"


def test_unauthenticated_requests_are_refused(kube_api: EnvTest) -> None:
    context = ssl.create_default_context(cafile=str(kube_api.ca_file))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(kube_api.url + "/api/v1/pods", context=context, timeout=5)
    assert refused.value.code in (401, 403)
