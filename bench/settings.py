"""Benchmark settings: the test settings (real PostgreSQL, RabbitMQ, Redis) with the bench URLs."""

from payments_project.settings.test import *  # noqa: F403

ROOT_URLCONF = "bench.urls"  # the project's URLs plus the one-INSERT baseline view
DEBUG = False
