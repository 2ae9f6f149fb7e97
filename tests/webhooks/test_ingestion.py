import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from payments_project.celery import app
from tasks.base import sends_flush
from tests.entitlements.conftest import CountingConnectionPool, round_trips  # noqa: F401 - a fixture
from tests.support.races import race
from tests.support.stripe_events import delivery, signed, stripe_event
from tests.support.worker import purge
from webhooks.models import WebhookEvent

URL = "/webhooks/stripe/"
PROBLEM = "application/problem+json"


def subscription_updated(**fields: object) -> dict[str, object]:
    return stripe_event(
        "customer.subscription.updated",
        {"id": "sub_123", "object": "subscription", "customer": "cus_123", "status": "active"},
        **fields,
    )


def rejected_count(reason: str) -> float:
    return REGISTRY.get_sample_value("payments_webhook_events_rejected_total", {"reason": reason}) or 0.0


@pytest.fixture
def webhooks_queue() -> Iterator[str]:
    purge(["webhooks"])
    yield "webhooks"
    purge(["webhooks"])


def queued(queue: str) -> int:
    sends_flush()  # the processing task is sent after commit, off the request's thread
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)


@pytest.mark.django_db(transaction=True)
def test_a_signed_event_is_stored_with_its_envelope_and_its_processing_is_enqueued(
    client: Client, webhooks_queue: str
) -> None:
    event = subscription_updated(created=1_700_000_000)

    response = client.post(URL, **delivery(event))

    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    stored = WebhookEvent.objects.get()
    assert (stored.event_id, stored.type, stored.object_id, stored.customer_id) == (
        event["id"],
        "customer.subscription.updated",
        "sub_123",
        "cus_123",
    )
    assert stored.status == WebhookEvent.Status.RECEIVED
    assert stored.livemode is False
    assert stored.api_version == "2024-06-20"
    assert stored.provider_created_at.timestamp() == 1_700_000_000
    assert json.loads(stored.raw_body) == event
    assert queued(webhooks_queue) == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_again_is_stored_once_and_flagged_duplicate(
    client: Client, webhooks_queue: str
) -> None:
    event = subscription_updated()

    first = client.post(URL, **delivery(event))
    second = client.post(URL, **delivery(event))

    assert first.json()["duplicate"] is False
    assert second.status_code == 200
    assert second.json() == {"received": True, "duplicate": True}
    assert WebhookEvent.objects.count() == 1
    assert queued(webhooks_queue) == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_deliveries_of_one_event_store_one_row() -> None:
    event = subscription_updated()
    kwargs = delivery(event)

    answers = race(*[lambda: Client().post(URL, **kwargs).json()] * 20)

    assert WebhookEvent.objects.count() == 1
    assert len(answers) == 20
    assert sorted(answer["duplicate"] for answer in answers) == [False] + [True] * 19  # type: ignore[type-var]


def _bad_signature(event: dict[str, object]) -> dict[str, object]:
    return {**delivery(event), "HTTP_STRIPE_SIGNATURE": signed(json.dumps(event), secret="whsec_not_ours")}


def _no_signature(event: dict[str, object]) -> dict[str, object]:
    kwargs = delivery(event)
    del kwargs["HTTP_STRIPE_SIGNATURE"]
    return kwargs


def _stale(event: dict[str, object]) -> dict[str, object]:
    return delivery(event, timestamp=int(time.time()) - 301)


def _tampered(event: dict[str, object]) -> dict[str, object]:
    kwargs = delivery(event)
    kwargs["data"] = kwargs["data"].replace("active", "canceled")
    return kwargs


def _signed_garbage(event: dict[str, object]) -> dict[str, object]:
    body = "{not json"
    return {"data": body, "content_type": "application/json", "HTTP_STRIPE_SIGNATURE": signed(body)}


def _signed_without_type(event: dict[str, object]) -> dict[str, object]:
    return delivery({k: v for k, v in event.items() if k != "type"})


def _signed_without_object(event: dict[str, object]) -> dict[str, object]:
    return delivery({**event, "data": {"object": "sub_123"}})


def _form_encoded(event: dict[str, object]) -> dict[str, object]:
    return {**delivery(event), "content_type": "application/x-www-form-urlencoded"}


def _too_large(event: dict[str, object]) -> dict[str, object]:
    return delivery({**event, "padding": "x" * 256 * 1024})


@pytest.mark.parametrize(
    ("make_delivery", "status", "reason"),
    [
        (_no_signature, 400, "missing_signature"),
        (_bad_signature, 400, "bad_signature"),
        (_tampered, 400, "bad_signature"),
        (_stale, 400, "stale_timestamp"),
        (_signed_garbage, 400, "malformed"),
        (_signed_without_type, 400, "malformed"),
        (_signed_without_object, 400, "malformed"),
        (_form_encoded, 415, None),
        (_too_large, 413, None),
    ],
)
@pytest.mark.django_db
def test_a_delivery_we_cannot_trust_or_read_is_refused_and_stores_nothing(
    client: Client, make_delivery, status: int, reason: str | None
) -> None:  # type: ignore[no-untyped-def]
    before = rejected_count(reason) if reason else 0.0

    response = client.post(URL, **make_delivery(subscription_updated()))

    assert response.status_code == status
    assert response["Content-Type"] == PROBLEM
    assert WebhookEvent.objects.count() == 0
    if reason:
        assert rejected_count(reason) == before + 1


def _header(event: dict[str, object], header: str) -> dict[str, object]:
    return {**delivery(event), "HTTP_STRIPE_SIGNATURE": header}


@pytest.mark.parametrize(
    "make_header",
    [
        lambda good: f"t={int(time.time())},v1=" + "0" * 64,  # a v1 no secret of ours makes
        lambda good: good.split(",")[1],  # no timestamp
        lambda good: good.split(",")[0],  # no v1 signature
        lambda good: good.replace("v1=", "v0="),  # only a scheme we do not check
        lambda good: good.replace("t=", "t=soon"),  # a timestamp that is not a number
        lambda good: good.split(",")[0] + ",v1=\u00e9t\u00e9",  # not ASCII: refused, never a 500
        lambda good: "t",
    ],
)
@pytest.mark.django_db
def test_a_signature_header_without_a_matching_v1_is_refused_as_a_bad_signature(
    client: Client, make_header: Any
) -> None:
    event = subscription_updated()
    before = rejected_count("bad_signature")
    header = make_header(delivery(event)["HTTP_STRIPE_SIGNATURE"])

    response = client.post(URL, **_header(event, header))

    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    assert rejected_count("bad_signature") == before + 1
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_a_header_with_several_v1_signatures_is_accepted_when_any_of_them_matches(client: Client) -> None:
    # Stripe signs with every secret an endpoint has while one is being rolled (one v1 each).
    event = subscription_updated()
    timestamp, good = delivery(event)["HTTP_STRIPE_SIGNATURE"].split(",")

    response = client.post(URL, **_header(event, f"{timestamp},v1={'f' * 64},{good},v0=whatever"))

    assert response.status_code == 200
    assert WebhookEvent.objects.count() == 1


@pytest.mark.django_db
def test_during_secret_rotation_both_the_old_and_the_new_secret_are_accepted(client: Client) -> None:
    with override_settings(STRIPE_WEBHOOK_SECRETS=["whsec_old", "whsec_new"]):
        old = client.post(URL, **delivery(subscription_updated(), secret="whsec_old"))
        new = client.post(URL, **delivery(subscription_updated(), secret="whsec_new"))
        retired = client.post(URL, **delivery(subscription_updated(), secret="whsec_retired"))

    assert (old.status_code, new.status_code, retired.status_code) == (200, 200, 400)
    assert WebhookEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_event_of_the_other_livemode_is_stored_and_ignored(client: Client, webhooks_queue: str) -> None:
    response = client.post(URL, **delivery(subscription_updated(livemode=True)))

    assert response.status_code == 200
    stored = WebhookEvent.objects.get()
    assert stored.status == WebhookEvent.Status.IGNORED
    assert "livemode" in stored.last_error
    assert queued(webhooks_queue) == 0


@pytest.mark.django_db
def test_only_post_is_allowed(client: Client) -> None:
    response = client.get(URL)

    assert response.status_code == 405
    assert response["Content-Type"] == PROBLEM


@pytest.mark.django_db
def test_the_webhook_needs_no_jwt_and_no_csrf_token() -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post(URL, **delivery(subscription_updated(id=f"evt_{uuid.uuid4().hex}")))

    assert response.status_code == 200


@pytest.mark.django_db
def test_the_webhook_is_rate_limited_by_client_ip(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "webhook": "2/m"}

    answers = [client.post(URL, **delivery(subscription_updated())) for _ in range(3)]
    other_ip = client.post(URL, **delivery(subscription_updated()), REMOTE_ADDR="10.9.8.7")

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2]["Content-Type"] == PROBLEM
    assert int(answers[2]["Retry-After"]) > 0
    assert other_ip.status_code == 200
    assert WebhookEvent.objects.count() == 3


@pytest.mark.django_db
def test_accepted_deliveries_count_their_limit_in_batches_costing_no_redis_round_trip(
    client: Client,
    settings: Any,  # pytest-django's settings fixture
    round_trips: type[CountingConnectionPool],  # noqa: F811 - the fixture imported above
) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "webhook": "1200/m"}  # hits reported 24 at a time

    round_trips.checkouts = 0
    answers = [client.post(URL, **delivery(subscription_updated())) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert round_trips.checkouts == 0
    assert WebhookEvent.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_new_delivery_is_stored_in_one_write_and_never_read_back(client: Client, webhooks_queue: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as new, CaptureQueriesContext(connection):
        client.post(URL, **delivery(subscription_updated(id="evt_one_statement")))
    with CaptureQueriesContext(connection) as again:
        duplicate = client.post(URL, **delivery(subscription_updated(id="evt_one_statement")))

    # One statement writes (and says whether it inserted), the erased-subject lookup folded into it
    # (#14: events about an erased customer are stored redacted); nothing reads the inbox.
    [write] = [query["sql"] for query in new.captured_queries]
    assert "INSERT" in write and "ON CONFLICT" in write and "RETURNING" in write
    assert '"billing_customer"' in write
    assert len(again.captured_queries) == len(new.captured_queries) and duplicate.json()["duplicate"] is True
    assert WebhookEvent.objects.filter(event_id="evt_one_statement").count() == 1
    assert queued(webhooks_queue) == 1


@pytest.mark.django_db(transaction=True)
def test_a_connection_prepares_the_inbox_insert_once_and_reuses_it(client: Client, webhooks_queue: str) -> None:
    from django.db import connection

    # when: more deliveries on one connection than psycopg's prepare_threshold
    for n in range(8):
        assert client.post(URL, **delivery(subscription_updated(id=f"evt_prepared_{n}"))).status_code == 200

    # then: PostgreSQL holds the insert as this session's prepared statement (parsed and planned once),
    # and every delivery was stored
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    assert any('INSERT INTO "webhooks_webhookevent"' in statement for statement in prepared)
    assert WebhookEvent.objects.filter(event_id__startswith="evt_prepared_").count() == 8


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_deliveries_costs_fewer_drain_messages_than_deliveries(
    client: Client,
    webhooks_queue: str,
    settings: Any,  # pytest-django's settings fixture
) -> None:
    settings.TASK_SEND_LINGER_SECONDS = 3  # far longer than the burst takes: no timing in the assertion
    assert client.post(URL, **delivery(subscription_updated())).status_code == 200  # the publisher connects
    before = queued(webhooks_queue)

    answers = [client.post(URL, **delivery(subscription_updated())) for _ in range(10)]

    assert [a.status_code for a in answers] == [200] * 10
    assert WebhookEvent.objects.filter(status=WebhookEvent.Status.RECEIVED).count() == 11
    # Sent less than a linger after the previous round, the ten nudges wait for the next and go as one
    # message, sent after all their commits.
    assert queued(webhooks_queue) - before == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_event_stored_after_a_drain_ran_is_woken_by_its_held_nudge_without_the_sweeper(
    client: Client,
    settings: Any,  # pytest-django's settings fixture
) -> None:
    from tests.support.worker import celery_worker, wait_until
    from tests.webhooks.handlers_for_tests import effects

    settings.TASK_SEND_LINGER_SECONDS = 5  # the second event's nudge waits in the publisher's next round
    first, second = (f"obj_{uuid.uuid4().hex[:12]}" for _ in range(2))
    status = lambda obj_id: WebhookEvent.objects.get(object_id=obj_id).status  # noqa: E731

    with celery_worker(["webhooks"], include="tests.webhooks.handlers_for_tests"):
        assert client.post(URL, **delivery(stripe_event("test.effect", {"id": first}))).status_code == 200
        assert wait_until(lambda: status(first) == WebhookEvent.Status.PROCESSED)
        # The drain that ran the first event has made its last claim: only a nudge sent after this commit
        # wakes another (no beat runs here, and the sweeper's pickup grace is a minute).
        assert client.post(URL, **delivery(stripe_event("test.effect", {"id": second}))).status_code == 200

        assert wait_until(lambda: status(second) == WebhookEvent.Status.PROCESSED)

    assert (effects(first), effects(second)) == (1, 1)


def _next_request(connection: Any) -> None:
    """What a request's start does to a persistent connection that is neither broken nor too old
    (close_old_connections; Django's test client skips it): its first query checks its health again."""
    connection.health_check_done = False


@pytest.mark.django_db(transaction=True)
def test_a_delivery_on_a_healthy_reused_connection_sends_only_its_insert(
    client: Client, webhooks_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from django.db import connection

    assert client.post(URL, **delivery(subscription_updated(id="evt_reused_1"))).status_code == 200
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def counting(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)  # every statement psycopg sends, Django's own too
    _next_request(connection)

    assert client.post(URL, **delivery(subscription_updated(id="evt_reused_2"))).status_code == 200

    # No `SELECT 1` health check first: the idle socket shows the server has not closed the connection.
    [insert] = sent
    assert insert.startswith(("INSERT", "WITH")) and "webhooks_webhookevent" in insert


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_closed_between_deliveries_is_replaced_before_the_insert(
    client: Client, webhooks_queue: str
) -> None:
    from django.db import connection, connections

    assert client.post(URL, **delivery(subscription_updated(id="evt_before_restart"))).status_code == 200
    web_pid = connection.connection.info.backend_pid
    # PostgreSQL ends that session (a restart, an idle timeout, an operator): from another connection,
    # waiting until it is gone.
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [web_pid])
            assert cursor.fetchone() == (True,)
    finally:
        other.close()
    _next_request(connection)

    response = client.post(URL, **delivery(subscription_updated(id="evt_after_restart")))

    assert response.status_code == 200 and response.json()["duplicate"] is False
    assert connection.connection.info.backend_pid != web_pid
    assert WebhookEvent.objects.filter(event_id="evt_after_restart").exists()
