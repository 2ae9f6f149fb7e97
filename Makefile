# The two commands that matter: `make run` (embedded, no services) and `make test` (real services).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: run test lint bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

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
test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_ENV=test $(BIN)/mypy .

bench: $(VENV)/.dev
	@echo "Benchmarks: see bench/README.md"

clean:
	rm -rf var staticfiles
