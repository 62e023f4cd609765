#!/usr/bin/env bash
# xds-server on a kind cluster, end to end: build the image, create a cluster, load the image,
# install (CRDs + server), deploy a sample app injected with `xds-server inject`, check traffic
# in the default mesh, apply Sidecars and a ServiceEntry, check traffic again.
#
#   e2e/kind/run.sh              # needs docker, kind, kubectl; about 3-5 minutes
#   KEEP=1 e2e/kind/run.sh       # leave the cluster up afterwards (kind delete cluster --name xds-e2e)
#
# Environment: CLUSTER (xds-e2e), IMAGE (xds-server:0.1.0), ENVOY_IMAGE (envoyproxy/envoy:v1.40.0),
# KIND_NODE_IMAGE (kind's default; Kubernetes >= 1.29 for native sidecars), KEEP (0).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-xds-e2e}
IMAGE=${IMAGE:-xds-server:0.1.0}
ENVOY_IMAGE=${ENVOY_IMAGE:-envoyproxy/envoy:v1.40.0}
CLIENT_IMAGE=curlimages/curl:8.11.1
KEEP=${KEEP:-0}
CONTEXT="kind-$CLUSTER"
k() { kubectl --context "$CONTEXT" "$@"; }
say() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || die "$tool is not installed (see e2e/kind/README.md)"
done

dump() {
  say "diagnostics"
  k get pods -A -o wide || true
  k -n xds-system logs deploy/xds-server --tail=100 || true
  for ns in e2e-a e2e-b; do
    for pod in $(k -n "$ns" get pods -o name 2>/dev/null); do
      k -n "$ns" logs "$pod" -c istio-init --tail=40 || true
      k -n "$ns" logs "$pod" -c istio-proxy --tail=40 || true
    done
  done
}
cleanup() {
  local code=$?
  [ "$code" = 0 ] || dump
  if [ "$KEEP" = 1 ]; then
    echo "cluster kept: kubectl --context $CONTEXT ...; kind delete cluster --name $CLUSTER"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$code"
}

say "build $IMAGE"
docker build -t "$IMAGE" .

say "cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
trap cleanup EXIT
docker pull -q "$ENVOY_IMAGE" >/dev/null && docker pull -q "$CLIENT_IMAGE" >/dev/null
kind load docker-image --name "$CLUSTER" "$IMAGE" "$ENVOY_IMAGE" "$CLIENT_IMAGE"

say "install xds-server"
k apply -k deploy/crds
k wait --for condition=established --timeout=60s crd/sidecars.networking.istio.io crd/serviceentries.networking.istio.io
k apply -k deploy/
k -n xds-system set image deploy/xds-server xds-server="$IMAGE"
k -n xds-system rollout status deploy/xds-server --timeout=180s

say "sample app, injected"
# inject runs from the image itself: no Python needed on this machine
docker run --rm -i -e XDS_INJECT_INIT_IMAGE="$IMAGE" "$IMAGE" inject -f - --image "$ENVOY_IMAGE" \
  < e2e/kind/apps.yaml | sed "s#image: xds-server:0.1.0#image: $IMAGE#" | k apply -f -
for target in e2e-a/web e2e-a/client e2e-b/api; do
  k -n "${target%/*}" rollout status "deploy/${target#*/}" --timeout=180s
done
k -n e2e-a get pod -l app=client -o jsonpath='{.items[0].spec.initContainers[*].name} {.items[0].spec.containers[*].name}' \
  | grep -q "istio-init client istio-proxy" || die "the client pod is not injected"

# call URL [CURL ARGS...]: the HTTP status the client app gets (its traffic goes through its Envoy)
call() {
  local url=$1; shift
  k -n e2e-a exec deploy/client -c client -- curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true
}
# expect STATUS URL [CURL ARGS...]: retry for up to 60 s (config pushes and endpoints take a moment)
expect() {
  local want=$1 url=$2 got=""; shift 2
  for _ in $(seq 60); do
    got=$(call "$url" "$@")
    [ "$got" = "$want" ] && { echo "ok   $want  $url $*"; return 0; }
    sleep 1
  done
  die "$url $*: expected HTTP $want, got ${got:-nothing}"
}

say "default mesh (no Sidecar): every Service is imported, unknown hosts pass through"
expect 200 http://web.e2e-a/
expect 200 http://web.e2e-a.svc.cluster.local/
expect 200 http://api.e2e-b/
body=$(k -n e2e-a exec deploy/client -c client -- curl -s --max-time 5 http://api.e2e-b/)
case "$body" in "hello from api-"*".e2e-b") echo "ok   answered by $body" ;; *) die "unexpected body: $body" ;; esac

say "Sidecar e2e-a/default: hosts ./* and REGISTRY_ONLY; ServiceEntry api.internal.example"
k apply -f e2e/kind/sidecars.yaml
expect 502 http://api.e2e-b/                       # not imported any more: blocked by REGISTRY_ONLY
expect 200 http://web.e2e-a/                       # its own namespace still is
expect 200 http://api.internal.example/ --resolve api.internal.example:80:240.240.0.1   # the ServiceEntry VIP

say "Sidecar removed: back to the default mesh"
k delete -f e2e/kind/sidecars.yaml
expect 200 http://api.e2e-b/

say "all checks passed"
