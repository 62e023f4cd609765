#!/bin/sh
# One Envoy bootstrap per sidecar of the demo mesh, written by `xds-server bootstrap` into DIR
# (docker-compose.yml's one-shot `bootstrap` service; the Envoys read them from a shared volume).
# Node ids and metadata are the demo's own (DEMO_TOPOLOGY in xds_server/commands/demo.py):
# the Istio node id form, INTERCEPTION_MODE=NONE (no iptables), admin on the pod IP.
#   usage: bootstrap.sh DIR [XDS_ADDRESS]
set -eu
out=${1:?usage: bootstrap.sh DIR [XDS_ADDRESS]}
xds=${2:-127.0.0.1:15010}
mkdir -p "$out"

# sidecar POD NAMESPACE APP POD_IP
sidecar() {
  xds-server bootstrap \
    --node-id "sidecar~$4~$1.$2~$2.svc.cluster.local" \
    --xds-address "$xds" \
    --admin-address "$4" --admin-port 15000 \
    --metadata INTERCEPTION_MODE=NONE \
    --metadata "NAMESPACE=$2" \
    --metadata "LABELS={\"app\":\"$3\"}" \
    --metadata "INSTANCE_IPS=$4" \
    > "$out/$1.$2.yaml.tmp"
  mv "$out/$1.$2.yaml.tmp" "$out/$1.$2.yaml"
  echo "wrote $out/$1.$2.yaml"
}

sidecar frontend-1 shop frontend 127.0.1.1
sidecar catalog-1 shop catalog 127.0.1.2
sidecar payments-1 payments payments 127.0.1.3
