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
# binutils: `strip` for the slimming step below (this stage only)
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python -m venv /opt/xds-server
COPY constraints.txt pyproject.toml README.md ./
COPY xds_server ./xds_server
RUN /opt/xds-server/bin/pip install --no-compile -c constraints.txt .
# Slimming, measured in docs/deploy.md ("Image size"); nothing removed here is used at run time:
# - pip and setuptools: nothing is installed into the venv after this stage;
# - kubernetes/aio: the client's asyncio twin (about half of the package); xds-server uses the
#   synchronous client (xds_server/sources/), and `import kubernetes` does not load aio;
# - the test suites some packages ship (`tests` directories);
# - debug symbols of the compiled extensions (uvloop's alone are 10 MB).
# Then bytecode, once, for every module (the image runs as non-root and cannot write it later).
# The Kubernetes client's generated API and model classes (OpenAPI Generator output, "do not
# edit") keep only their bytecode, beside where the source was: 32 MB less, the same imports;
# a traceback through them shows file and line but not the source text.
RUN /opt/xds-server/bin/pip uninstall --quiet --yes pip setuptools \
 && cd /opt/xds-server/lib/python3*/site-packages \
 && rm -rf kubernetes/aio \
 && find . -depth -type d -name tests -exec rm -rf '{}' + \
 && find . -name '*.so' -exec strip --strip-unneeded '{}' + \
 && /opt/xds-server/bin/python -m compileall -q -j 0 -x '/kubernetes/client/(api|models)/' /opt/xds-server/lib \
 && /opt/xds-server/bin/python -m compileall -q -j 0 -b kubernetes/client/api kubernetes/client/models \
 && find kubernetes/client/api kubernetes/client/models -name '*.py' -delete \
 && /opt/xds-server/bin/xds-server --version \
 && /opt/xds-server/bin/python -c "import kubernetes, uvloop, grpc, xds_server.sources.kubernetes, xds_server.app"

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
LABEL org.opencontainers.image.title="xds-server" \
      org.opencontainers.image.description="A small Istio-compatible xDS control plane for Envoy sidecars" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
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
