# The commands that matter: `make run` (embedded, no services), `make test` (real services) and `make demo`
# (a subscriber's journey against the embedded stack and a local Stripe stand-in; ends by itself).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: run test demo lint bench install install-dev clean lock audit sbom

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# Chart rendering and Dockerfile/entrypoint linters (helm-python-sdk, kubernetes-validate, hadolint, shellcheck).
$(VENV)/.deploy: requirements-deploy.txt $(VENV)/.dev
	$(BIN)/pip install --quiet -r requirements-deploy.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

## make run: SQLite (WAL), kombu's filesystem broker and a local cache unless DATABASE_URL,
## CELERY_BROKER_URL and REDIS_URL say otherwise; web + worker + beat under honcho.
run: $(VENV)/.runtime
	mkdir -p var/broker var/broker-control
	DJANGO_ENV=$${DJANGO_ENV:-development} $(BIN)/python manage.py migrate --noinput
	DJANGO_ENV=$${DJANGO_ENV:-development} $(BIN)/python manage.py bootstrap_demo
	DJANGO_ENV=$${DJANGO_ENV:-development} PATH=$(CURDIR)/$(BIN):$$PATH exec $(BIN)/honcho start -f Procfile -p $(PORT)

## make test: the whole suite against PostgreSQL, RabbitMQ and Redis on localhost.
test: $(VENV)/.dev $(VENV)/.deploy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make demo: the embedded stack (as make run, on a fresh SQLite database in var/demo/) in front of a local
## Stripe stand-in (localstripe + tests/support/stripe_standin.py, from requirements-dev.txt), then a subscriber
## walked through in the terminal. Ends by itself; scripts/demo.py kills each process group it started on the
## way out (Ctrl-C included). No services, no Stripe account.
demo: $(VENV)/.dev
	mkdir -p var/broker var/broker-control
	$(BIN)/python scripts/demo.py

lint: $(VENV)/.dev $(VENV)/.deploy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_ENV=test $(BIN)/mypy .
	DJANGO_ENV=test $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/hadolint --failure-threshold style Dockerfile
	$(BIN)/shellcheck --shell=sh --severity=style scripts/docker-entrypoint.sh
	$(BIN)/python -m tests.deploy.check_chart

## make lock: the hash-pinned lock files the image installs with --require-hashes, from the pinned
## requirements (run it after adding or bumping a package there; tests/deploy/test_supply_chain.py checks
## that each lock agrees with its requirements). Needs PyPI.
LOCK_FILES := requirements.lock requirements-sbom.lock
UV_COMPILE := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform linux \
	--custom-compile-command "make lock"
lock: $(VENV)/.deploy
	$(UV_COMPILE) requirements.txt -o requirements.lock
	$(UV_COMPILE) requirements-sbom.txt -o requirements-sbom.lock

## make audit: known vulnerabilities in everything the image installs (pip-audit, PyPI's advisories). Needs PyPI.
## --strict: a package the advisory service cannot look up fails the audit instead of passing unchecked.
audit: $(VENV)/.deploy
	$(foreach lock,$(LOCK_FILES),$(BIN)/pip-audit --progress-spinner off --strict --require-hashes --disable-pip -r $(lock) &&) true

## make sbom: the CycloneDX SBOM of the runtime lock in var/sbom.cdx.json (the image carries its own,
## made at build from what it installed: /app/sbom.cdx.json).
sbom: $(VENV)/.deploy
	mkdir -p var
	$(BIN)/cyclonedx-py requirements requirements.lock --of JSON --output-reproducible -o var/sbom.cdx.json

## make bench: every benchmark (or BENCH_ARGS="webhooks ..."), one table, the run in var/bench/<UTC time>.json.
## Needs PostgreSQL, RabbitMQ, Redis and wrk (installed here with apt-get when run as root).
bench: $(VENV)/.dev
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; \
		else \
			echo "make bench needs wrk: run 'sudo apt-get install wrk' (Debian/Ubuntu), then make bench again" >&2; \
			exit 1; \
		fi; }
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf var staticfiles
