"""/readyz fails only when the database does; Redis and RabbitMQ are reported, never a reason to leave the Service."""

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from payments_project.settings.parsing import cache_config
from tests.support.broker import broker_url_through
from tests.support.proxy import TcpProxy, silent_port
from tests.support.server import gunicorn

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def _redis_through(port: int) -> str:
    url = urlsplit(settings.REDIS_URL)
    return urlunsplit(url._replace(netloc=f"127.0.0.1:{port}"))


def _redis_port() -> int:
    return urlsplit(settings.REDIS_URL).port or 6379


def _up(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("payments_dependency_up", {"dependency": dependency})


def test_it_is_ready_and_names_each_dependency_when_all_answer(client: Client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "cache": "ok", "broker": "ok"}
    assert (_up("database"), _up("cache"), _up("broker")) == (1.0, 1.0, 1.0)


def test_it_stays_ready_while_rabbitmq_is_cut_and_reports_the_broker_down(client: Client) -> None:
    with TcpProxy(5672) as rabbitmq, override_settings(CELERY_BROKER_URL=broker_url_through(rabbitmq.port)):
        assert client.get("/readyz").json()["broker"] == "ok"

        rabbitmq.cut()
        during = client.get("/readyz")
        up_during = _up("broker")

        rabbitmq.restore()
        after = client.get("/readyz")

    assert during.status_code == 200
    assert during.json() == {"database": "ok", "cache": "ok", "broker": "down"}
    assert up_during == 0.0
    assert after.json()["broker"] == "ok"
    assert _up("broker") == 1.0


def test_it_stays_ready_while_redis_is_cut_and_reports_the_cache_down(client: Client) -> None:
    with TcpProxy(_redis_port()) as redis, override_settings(CACHES=cache_config(_redis_through(redis.port))):
        redis.cut()
        response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "cache": "down", "broker": "ok"}
    assert _up("cache") == 0.0


@override_settings(READINESS_TIMEOUT_SECONDS=1.0)
def test_a_redis_and_a_rabbitmq_that_accept_and_never_answer_cost_the_probe_at_most_its_timeout(
    client: Client,
) -> None:
    with silent_port() as hung_redis, silent_port() as hung_rabbitmq:
        caches = cache_config(_redis_through(hung_redis))
        caches["default"]["OPTIONS"] = {"socket_connect_timeout": 30, "socket_timeout": 30}  # as if left unset
        with override_settings(CACHES=caches, CELERY_BROKER_URL=broker_url_through(hung_rabbitmq)):
            started = time.monotonic()
            response = client.get("/readyz")
            elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "cache": "down", "broker": "down"}
    assert elapsed < 1.5


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_served_pod_is_unready_only_while_postgresql_is_cut() -> None:
    db = connection.settings_dict
    with (
        TcpProxy(int(db["PORT"] or 5432)) as postgres,
        TcpProxy(_redis_port()) as redis,
        TcpProxy(5672) as rabbitmq,
        gunicorn(
            DATABASE_URL=f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{postgres.port}/{db['NAME']}",
            REDIS_URL=_redis_through(redis.port),
            CELERY_BROKER_URL=broker_url_through(rabbitmq.port),
        ) as base,
    ):
        assert _get(f"{base}/readyz") == (200, {"database": "ok", "cache": "ok", "broker": "ok"})

        redis.cut()
        rabbitmq.cut()
        degraded = _get(f"{base}/readyz")
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()  # noqa: S310 - loopback

        postgres.cut()
        started = time.monotonic()
        status, body = _get(f"{base}/readyz")
        unready_after = time.monotonic() - started

    assert degraded == (200, {"database": "ok", "cache": "down", "broker": "down"})
    assert 'payments_dependency_up{dependency="cache"} 0.0' in metrics
    assert 'payments_dependency_up{dependency="broker"} 0.0' in metrics
    assert 'payments_dependency_up{dependency="database"} 1.0' in metrics
    assert status == 503
    assert body["type"].endswith(":not_ready")
    assert (body["database"], body["cache"], body["broker"]) == ("down", "down", "down")
    assert unready_after < 8  # the chart's readiness probe gives up after 8 s


def _get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - our loopback server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
