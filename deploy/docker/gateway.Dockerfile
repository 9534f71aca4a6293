# syntax=docker/dockerfile:1.7
# The bedside gateway image: Python slim + `vigil[edge]` (LiteRT, no TensorFlow, no
# pandas, none of cloud_hub/). Build from the repository root:
#
#   docker build -f deploy/docker/gateway.Dockerfile -t vigil-gateway .
#
# Multi-arch (a gateway is often an arm64 box; CI builds both, .github/workflows/ci.yml):
#
#   docker buildx create --use --name vigil    # once; QEMU/binfmt for the foreign arch
#   docker buildx build -f deploy/docker/gateway.Dockerfile \
#     --platform linux/amd64,linux/arm64 -t <registry>/vigil-gateway:<tag> --push .
#
# ai-edge-litert publishes manylinux wheels for x86_64 and aarch64, so nothing is
# compiled under emulation. No secret is baked in: the gateway's certificate and key
# and its config are mounted at run time (see deploy/README.md).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/vigil
# Only what a gateway runs: the contracts, the LiteRT model runtime, the agent, the CLI, the shipped models.
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY model_runtime ./model_runtime
COPY edge_agent ./edge_agent
COPY vigil_cli ./vigil_cli
COPY models ./models
# Editable, so that contracts.paths finds models/ beside the code in /opt/vigil.
RUN pip install -e '.[edge]' \
 && ! pip show tensorflow tensorflow-cpu pandas >/dev/null 2>&1

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="vigil-gateway" \
      org.opencontainers.image.description="Vigil bedside gateway (int8 TFLite via LiteRT)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --home-dir /var/lib/vigil --shell /usr/sbin/nologin vigil \
 && mkdir -p /var/lib/vigil /etc/vigil \
 && chown vigil:vigil /var/lib/vigil
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/vigil /opt/vigil
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VIGIL_HOME=/var/lib/vigil
USER vigil
WORKDIR /var/lib/vigil
VOLUME ["/var/lib/vigil"]
# /etc/vigil/gateway.toml (deploy/edge/gateway.example.toml) and /etc/vigil/tls/
# {ca.crt,client.crt,client.key} from `vigil hub enroll GW` are mounted read-only.
ENTRYPOINT ["vigil"]
CMD ["edge", "run", "--config", "/etc/vigil/gateway.toml", "--headless", "--json-logs"]
