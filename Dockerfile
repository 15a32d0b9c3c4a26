# syntax=docker/dockerfile:1
# aiva's reference service image: a build stage installs the package from this
# repository into a virtualenv; the runtime stage copies only that virtualenv
# (no compiler, no pip cache, no sources) and runs it as an unprivileged user.
#   docker build -t aiva .      docker run --rm -p 8000:8000 aiva
# Python 3.11 (the version aiva is built and tested on; its latest security
# release) on Debian 13 "trixie", the current stable (bookworm is oldstable).
ARG PYTHON_IMAGE=python:3.11.15-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pyproject.toml names README.md as the long description: both are needed to build.
COPY pyproject.toml README.md ./
COPY src ./src
# A regular (non-editable) install: the runtime stage gets no source tree.
RUN pip install .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 aiva \
 && useradd --system --uid 10001 --gid aiva --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin aiva
COPY --from=build /opt/venv /opt/venv
# The repository's settings (their `production` section points at the compose
# services); mount another folder over /app/config to replace them.
COPY config/settings.yaml /app/config/settings.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIVA_CONFIG_DIR=/app/config \
    AIVA_ENV=production \
    AIVA_SERVER__HOST=0.0.0.0 \
    AIVA_SERVER__PORT=8000
WORKDIR /app
# Numeric user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
EXPOSE 8000
# Docker's health status follows liveness only: a dead dependency must not mark
# the container unhealthy (readiness is the orchestrator's business). `aiva
# health` exits 1 when unhealthy and 2 on a settings error; HEALTHCHECK reserves
# 2, so every failure becomes 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD aiva health --probe live --url "http://127.0.0.1:${AIVA_SERVER__PORT}" > /dev/null || exit 1
# Exec form: `aiva serve` is the container's main process (no shell in between),
# so `docker stop`'s SIGTERM reaches uvicorn, which drains in-flight requests
# within server.graceful_timeout_s and flushes telemetry before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aiva", "serve"]
