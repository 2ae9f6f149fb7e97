# syntax=docker/dockerfile:1.7
#
# Jia Payments: one image for every process. The first argument picks it (scripts/docker-entrypoint.sh):
#   docker run IMAGE web | worker | beat | migrate | manage <command> | <any command>
# It runs as uid 10001 on a read-only root filesystem; only /tmp must be writable (an emptyDir in
# Kubernetes, `--read-only --tmpfs /tmp` with docker). No secret is baked in: with DJANGO_ENV=production
# (the default) the service refuses to start until the environment provides them.
#
# The base image is pinned to an exact Python patch release on an exact Debian release. For release
# builds, pin the digest too (Renovate/Dependabot keep both fresh), e.g.
#   FROM python:3.11.14-slim-bookworm@sha256:<digest of `docker buildx imagetools inspect python:3.11.14-slim-bookworm`>

############################## builder: wheels for every pinned dependency ##############################
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build
COPY requirements.txt .
# Every pin ships a wheel for linux/amd64 and linux/arm64; a dependency that ever needs compiling gets
# its build tools here, never in the runtime stage.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

############################## runtime ##############################
FROM python:3.11.14-slim-bookworm AS runtime

ARG APP_VERSION=0.1.0
LABEL org.opencontainers.image.title="jia-payments" \
      org.opencontainers.image.description="Jia Payments: web (gunicorn), Celery worker and beat" \
      org.opencontainers.image.version="${APP_VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HOME=/tmp \
    DJANGO_ENV=production \
    PORT=8000

# tini as PID 1: forwards SIGTERM to the server and reaps any orphan (exec probes run in the container).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app

# Installed from the builder's wheels only (no index): the wheels themselves never land in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \
    pip install --no-cache-dir --no-index --find-links=/wheels -r /tmp/requirements.txt

WORKDIR /app
# Application code stays root-owned: the app user can read it, not change it.
COPY . .

# Static files are collected at build time into STATIC_ROOT (/app/staticfiles) and served by WhiteNoise.
# The development settings need no secrets; nothing else runs with them. Byte-code is compiled now,
# since the read-only filesystem (and PYTHONDONTWRITEBYTECODE) keeps processes from writing it later.
RUN DJANGO_ENV=development python manage.py collectstatic --noinput \
    && python -m compileall -q /app

USER 10001:10001
EXPOSE 8000
# gunicorn and Celery both shut down gracefully on SIGTERM (the Kubernetes default signal).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/bin/sh", "/app/scripts/docker-entrypoint.sh"]
CMD ["web"]
