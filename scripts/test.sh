#!/usr/bin/env bash
# The whole test suite: system packages (root only), venv, lint, tests. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1; then
  # e2e pods need iptables (nf_tables backend); iproute2 is on the base image.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables iproute2 >/dev/null) \
    || echo "warning: could not install iptables; network-namespace tests will be skipped" >&2
fi
./scripts/setup.sh
# Kubernetes tests take etcd + kube-apiserver from KUBEBUILDER_ASSETS (controller-runtime's envtest
# convention); CI's checkout has them in ../shared/kube/bin.
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -d ../shared/kube/bin ]; then
  KUBEBUILDER_ASSETS="$(cd ../shared/kube/bin && pwd)"
  export KUBEBUILDER_ASSETS
fi
.venv/bin/ruff check .
.venv/bin/mypy xds_server
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
