#!/usr/bin/env bash
# The container image and the docker-compose demo mesh, built and run for real (docs/deploy.md,
# "Running it for real"). As root:
#
#   e2e/containers/run.sh                 # install the engine if missing, build, run, check, tear down
#   e2e/containers/run.sh --install-only  # only install the engine (podman, podman-compose)
#   CONTAINER_ENGINE=docker e2e/containers/run.sh   # with Docker and `docker compose` instead
#
# Podman (the default) comes from Debian (podman, runc, debootstrap) and podman-compose from PyPI,
# pinned, into a venv under $XDS_CONTAINERS_STATE (default /var/cache/xds-server-containers),
# together with a containers.conf that this script owns and passes through CONTAINERS_CONF, so the
# machine's /etc/containers is never edited. Images are kept as a cache; everything else the run
# creates is removed, even when a check fails. Exit codes: 0 all checks passed, 1 a check failed,
# 2 usage or a missing prerequisite, 3 the demo's published port 127.0.0.1:15014 is taken.
set -euo pipefail
cd "$(dirname "$0")/../.."

PODMAN_COMPOSE_VERSION=1.6.0
ENGINE=${CONTAINER_ENGINE:-podman}
STATE=${XDS_CONTAINERS_STATE:-/var/cache/xds-server-containers}
export XDS_CONTAINERS_STATE=$STATE

die() { echo "run.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (rootful podman, debootstrap, iptables, cgroups)"

install_podman() {
  if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
    echo "== installing podman, runc, debootstrap (apt)"
    # DPkg::Lock::Timeout: wait for another apt on this machine instead of failing at once.
    apt-get -o DPkg::Lock::Timeout=120 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq \
      podman runc debootstrap netavark iptables python3-venv >/dev/null
  fi
  # Debian's default crun 1.8.1 fails every container on a cgroup v1 + v2 "hybrid" host
  # ("crun: cgroups in hybrid mode not supported"), so runc; root here may lack CAP_SYS_RESOURCE,
  # so the containers' rlimits must stay within the caller's hard limits (podman's defaults of
  # 1048576 open files fail with "setrlimit RLIMIT_NOFILE: Operation not permitted"); no systemd,
  # so cgroupfs. CONTAINERS_CONF makes podman read this file instead of /etc/containers's.
  local nofile nproc
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 16384 ]; } && nproc=16384
  mkdir -p "$STATE"
  cat > "$STATE/containers.conf.tmp" <<CONF
# Written by e2e/containers/run.sh; used through CONTAINERS_CONF by that script only.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
CONF
  mv "$STATE/containers.conf.tmp" "$STATE/containers.conf"
  if [ ! -x "$STATE/venv/bin/podman-compose" ] \
     || [ "$("$STATE/venv/bin/podman-compose" --version 2>/dev/null | sed -n 's/^podman-compose version //p')" != "$PODMAN_COMPOSE_VERSION" ]; then
    echo "== installing podman-compose $PODMAN_COMPOSE_VERSION (PyPI, into $STATE/venv)"
    python3 -m venv "$STATE/venv"
    "$STATE/venv/bin/pip" install -q --disable-pip-version-check "podman-compose==$PODMAN_COMPOSE_VERSION"
  fi
}

case "$ENGINE" in
  podman)
    install_podman
    export CONTAINERS_CONF=$STATE/containers.conf
    ;;
  docker)
    docker info >/dev/null 2>&1 || die "CONTAINER_ENGINE=docker but \`docker info\` fails (no daemon?)"
    docker compose version >/dev/null 2>&1 || die "CONTAINER_ENGINE=docker needs the compose plugin (docker compose)"
    if [ ! -x "$STATE/venv/bin/python" ] || ! "$STATE/venv/bin/python" -c 'import yaml' 2>/dev/null; then
      python3 -m venv "$STATE/venv" && "$STATE/venv/bin/pip" install -q --disable-pip-version-check PyYAML
    fi
    ;;
  *) die "CONTAINER_ENGINE must be podman or docker, not $ENGINE" ;;
esac
[ "${1:-}" = --install-only ] && { echo "== engine ready: $ENGINE"; exit 0; }
exec "$STATE/venv/bin/python" -m e2e.containers.run "$@"
