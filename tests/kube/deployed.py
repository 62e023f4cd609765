"""deploy/ applied to the envtest apiserver the way docs/deploy.md tells a user to."""

from __future__ import annotations

from pathlib import Path

from tests.kube.envtest import EnvTest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAMESPACE, ACCOUNT = "xds-system", "xds-server"


def apply_deploy(kube_api: EnvTest) -> str:
    """deploy/crds and deploy/ applied (each after a server-side dry run); returns a token of
    the server's ServiceAccount."""
    for args in (("--dry-run=server", "-k", DEPLOY / "crds"), ("-k", DEPLOY / "crds")):
        kube_api.kubectl("apply", *map(str, args))
    # A server-side dry run checks namespaced objects against their namespace, which the same
    # dry run cannot create: the namespace goes first (docs/deploy.md says so too).
    kube_api.kubectl("apply", "-f", str(DEPLOY / "namespace.yaml"))
    dry = kube_api.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY)).stdout
    assert "deployment.apps/xds-server" in dry and "clusterrole.rbac.authorization.k8s.io/xds-server" in dry, dry
    kube_api.kubectl("apply", "-k", str(DEPLOY))
    deployment = kube_api.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/xds-server")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == ACCOUNT
    return kube_api.token_for(NAMESPACE, ACCOUNT)
