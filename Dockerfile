# syntax=docker/dockerfile:1
# xds-server: a small runtime image (Python slim + a venv), non-root, entry point `xds-server`.
#   docker build -t xds-server:0.1.0 .
#   docker run --rm -p 15010:15010 -p 15014:15014 -v "$PWD/xds_server/commands/demo_mesh:/etc/xds-server:ro" xds-server:0.1.0
# Versions are pinned by constraints.txt (pip freeze of the tested venv); the base image by tag
# (pass --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:... to pin a digest).
# The image also carries iptables: `xds-server inject` runs it as the pods' istio-init container.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/xds-server
COPY constraints.txt pyproject.toml README.md ./
COPY xds_server ./xds_server
RUN /opt/xds-server/bin/pip install --no-compile -c constraints.txt . \
 && /opt/xds-server/bin/python -m compileall -q /opt/xds-server/lib \
 && /opt/xds-server/bin/xds-server --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/xds-server \
 && groupadd --system --gid 10001 xds \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin xds
COPY --from=build /opt/xds-server /opt/xds-server
ENV PATH=/opt/xds-server/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /
EXPOSE 15010 15014
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:15014/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["xds-server"]
CMD ["serve", "--config-dir", "/etc/xds-server", "--admin-address", "0.0.0.0:15014"]
