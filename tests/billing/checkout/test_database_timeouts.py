"""A row locked elsewhere never holds a web request: PostgreSQL's lock_timeout for web processes ends the
wait, and the client gets a 503 it may retry (settings: PROCESS_KIND, DATABASE_SESSION_TIMEOUTS)."""

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from billing.models import Order
from tests.billing.factories import CustomerFactory, OrderFactory, PriceFactory
from tests.support.auth import bearer
from tests.support.server import gunicorn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@contextmanager
def row_locked(table: str, pk: object, *, at_most: int = 20) -> Iterator[None]:
    """Another session holds the row's lock (SELECT … FOR UPDATE in an open transaction) until the block ends,
    or PostgreSQL ends that session after `at_most` seconds (so code that waits forever cannot hang the test)."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres", dbname=db["NAME"]
    ) as holder:
        try:
            holder.execute(f"SET idle_in_transaction_session_timeout = '{at_most}s'")
            holder.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [pk])  # noqa: S608 - our table name
            yield
        finally:
            with suppress(psycopg.Error):  # ended by the server already
                holder.rollback()


def post_checkout(base: str, user_id: uuid.UUID, body: dict[str, str], key: str) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(  # noqa: S310 - our own loopback server
        f"{base}/api/v1/checkout/sessions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": bearer(user_id), "Idempotency-Key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_a_checkout_whose_order_is_locked_elsewhere_answers_503_within_the_lock_timeout() -> None:
    # given an order made by a first checkout, and a replay of that checkout while the order is locked
    user_id = uuid.uuid4()
    price = PriceFactory()
    order = OrderFactory(customer=CustomerFactory(user_id=user_id), price=price)
    body = {"price_id": str(price.id), "success_url": order.success_url, "cancel_url": order.cancel_url}
    lock_timeout = settings.DATABASE_SESSION_TIMEOUTS["web"][1]

    with gunicorn(STRIPE_API_KEY="sk_test_jia") as base, row_locked(Order._meta.db_table, order.id):
        started = time.monotonic()
        status, headers, problem = post_checkout(base, user_id, body, order.idempotency_key)
        seconds = time.monotonic() - started

    print(f"checkout with its order locked answered {status} in {seconds:.2f}s (lock_timeout {lock_timeout}s)")
    assert status == 503
    assert headers["Content-Type"] == "application/problem+json"
    assert problem["type"].endswith(":database_busy")
    assert int(headers["Retry-After"]) > 0
    assert lock_timeout <= seconds < lock_timeout + 2
    assert Order.objects.get(id=order.id).status == Order.Status.OPEN  # nothing changed


def test_each_process_kind_gets_its_own_postgresql_timeouts() -> None:
    # this test process is a worker (the default); gunicorn's wsgi.py makes a web process
    with connection.cursor() as cursor:
        shown = []
        for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"):
            cursor.execute(f"SHOW {name}")
            shown.append(cursor.fetchone()[0])

    assert shown == ["2min", "30s", "2min"]
    assert settings.DATABASE_SESSION_TIMEOUTS["web"] < settings.DATABASE_SESSION_TIMEOUTS["worker"]
    assert settings.DATABASE_SESSION_TIMEOUTS["worker"] < settings.DATABASE_SESSION_TIMEOUTS["migrate"]
