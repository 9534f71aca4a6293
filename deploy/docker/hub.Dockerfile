# syntax=docker/dockerfile:1.7
# The hub image: ingest, store, training (TensorFlow CPU), MLflow client, rollout.
# Also used for the MLflow server in deploy/docker-compose.yml (same mlflow version,
# with the PostgreSQL driver). Build from the repository root:
#
#   docker build -f deploy/docker/hub.Dockerfile -t vigil-hub .
#
# linux/amd64 only: tensorflow-cpu publishes x86_64 wheels. No secret is baked in:
# the hub's client certificate, the database password and the bundle signing key
# come from the runtime (compose secrets, Azure Key Vault references).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/vigil
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY model_runtime ./model_runtime
COPY cloud_hub ./cloud_hub
COPY converters ./converters
COPY vigil_cli ./vigil_cli
COPY models ./models
# `azure`: Key Vault for the signing key (cloud_hub.keys); pip only warns if absent.
RUN pip install -e '.[hub,azure]'

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="vigil-hub" \
      org.opencontainers.image.description="Vigil hub: ingest, store, retrain, sign, roll out" \
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
EXPOSE 8000
ENTRYPOINT ["vigil"]
CMD ["hub", "serve"]
