#!/bin/sh
# As upstream Envoy's image: a first argument starting with "-" is an Envoy flag; root drops to
# ENVOY_UID (default 101, the envoy user) unless that is 0. setpriv is util-linux's, in every
# Debian base.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- envoy "$@"
fi
if [ "$(id -u)" = 0 ] && [ "${ENVOY_UID:-101}" != 0 ]; then
  exec setpriv --reuid="${ENVOY_UID:-101}" --regid="${ENVOY_GID:-101}" --clear-groups "$@"
fi
exec "$@"
