# syntax=docker/dockerfile:1.7
#
# Jia Payments: one image for every process. The first argument picks it (scripts/docker-entrypoint.sh):
#   docker run IMAGE web | worker | beat | migrate | manage <command> | <any command>
# It runs as uid 10001 on a read-only root filesystem; only /tmp must be writable (an emptyDir in
# Kubernetes, `--read-only --tmpfs /tmp` with docker). No secret is baked in: with DJANGO_ENV=production
# (the default) the service refuses to start until the environment provides them.
#
# The base image is pinned to an exact Python patch release on an exact Debian release AND by the digest of
# its multi-architecture index, so a rebuild gets the same bytes (Renovate/Dependabot bump both together;
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm` prints the digest).
#
# Supply chain: every Python package is installed from requirements.lock with --require-hashes (pins and
# hashes; `make lock` regenerates it from requirements.txt), and a CycloneDX SBOM of what the image
# installed is written at build to /app/sbom.cdx.json (cyclonedx-py, from a hash-pinned virtualenv of the
# builder that never reaches the runtime image).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

############################## builder: verified wheels, and the SBOM tool ##############################
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build
COPY requirements.lock requirements-sbom.lock ./
# Wheels only (every pin ships one for linux/amd64 and linux/arm64), each checked against its hash in the
# lock: a package that is not in the lock, or whose bytes differ, fails the build.
RUN pip download --no-cache-dir --require-hashes --only-binary=:all: --dest /wheels -r requirements.lock \
    && python -m venv /opt/sbom \
    && /opt/sbom/bin/pip install --no-cache-dir --require-hashes -r requirements-sbom.lock

############################## runtime ##############################
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_VERSION=0.1.0
LABEL org.opencontainers.image.title="jia-payments" \
      org.opencontainers.image.description="Jia Payments: web (gunicorn), Celery worker and beat" \
      org.opencontainers.image.version="${APP_VERSION}"
# The release Sentry reports (settings: APP_VERSION).
ENV APP_VERSION=${APP_VERSION}

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

# Installed from the builder's verified wheels only (no index), hashes checked again; the wheels never land
# in a layer. Then the SBOM of the installed environment, by the builder's tool (mounted, not copied).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/opt/sbom,target=/opt/sbom \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes -r /tmp/requirements.lock \
    && mkdir -p /app \
    && /opt/sbom/bin/cyclonedx-py environment --of JSON --output-reproducible -o /app/sbom.cdx.json /usr/local/bin/python

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
