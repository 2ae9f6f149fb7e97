"""Starting a checkout: from the plans to Stripe's URL, idempotency keys, validation, audit and events."""

import time
import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing import services
from billing.models import Customer, Order, Price
from gdpr.models import AuditEvent
from gdpr.registry import pseudonym_for
from tasks.models import OutboxMessage
from tasks.outbox import outbox_dispatch_pending
from tests.billing.checkout.support import PROBLEM, SESSIONS, URL, checkout
from tests.billing.factories import OrderFactory, PriceFactory
from tests.support.auth import bearer
from tests.support.broker import EventsConsumer
from tests.support.races import race
from tests.support.stripe_fake import StripeFake, StripeRequest

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_user_goes_from_the_plans_to_a_checkout_url(api: Client, stripe_fake: StripeFake, price: Price) -> None:
    user_id = uuid.uuid4()
    plans = api.get("/api/v1/plans").json()
    price_id = plans[0]["prices"][0]["id"]

    response = checkout(api, user_id, Price.objects.get(pk=price_id))

    assert response.status_code == 201
    body = response.json()
    order = Order.objects.get()
    assert body == {
        "order_id": str(order.id),
        "status": "open",
        "checkout_url": f"https://checkout.stripe.com/c/pay/{order.stripe_session_id}",
        "stripe_session_id": order.stripe_session_id,
        "price_id": price_id,
        "amount": 1299,
        "currency": "eur",
        "created_at": body["created_at"],
    }
    assert api.get(f"/api/v1/orders/{order.id}", HTTP_AUTHORIZATION=bearer(user_id)).json()["status"] == "open"


def test_stripe_gets_the_order_id_as_reference_and_idempotency_key_and_the_user_id(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()

    checkout(api, user_id, price)

    order = Order.objects.select_related("customer").get()
    [call] = stripe_fake.sent(SESSIONS)
    assert call.idempotency_key == f"order:{order.id}"
    params = call.params
    assert params["client_reference_id"] == str(order.id)
    assert params["metadata[order_id]"] == str(order.id)
    assert params["metadata[user_id]"] == str(user_id)
    assert params["subscription_data[metadata][user_id]"] == str(user_id)
    assert params["line_items[0][price]"] == "price_family_month"
    assert params["mode"] == "subscription"
    # The Stripe customer was made first (in localstripe), carrying the user id.
    assert params["customer"] == order.customer.stripe_customer_id
    assert order.customer.stripe_customer_id.startswith("cus_")


def test_a_one_time_price_checks_out_in_payment_mode(api: Client, stripe_fake: StripeFake) -> None:
    lifetime = PriceFactory(interval=Price.Interval.ONE_TIME)

    assert checkout(api, uuid.uuid4(), lifetime).status_code == 201

    assert stripe_fake.sent(SESSIONS)[0].params["mode"] == "payment"
    assert "payment_intent_data[metadata][order_id]" in stripe_fake.sent(SESSIONS)[0].params


def test_it_rejects_a_checkout_without_an_idempotency_key(api: Client, stripe_fake: StripeFake, price: Price) -> None:
    response = checkout(api, uuid.uuid4(), price, key=None)

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"].endswith(":idempotency_key_missing")
    assert Order.objects.count() == 0
    assert len(stripe_fake.sent(SESSIONS)) == 0


def test_the_same_key_and_body_return_the_same_order_without_a_second_session(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    first = checkout(api, user_id, price)

    again = checkout(api, user_id, price)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Order.objects.count() == 1
    assert len(stripe_fake.sent(SESSIONS)) == 1


def test_the_same_key_after_the_bank_debit_failed_returns_the_failed_order_without_a_new_session(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    first = checkout(api, user_id, price)
    order = Order.objects.get()
    with transaction.atomic():
        services.order_fail_from_stripe(
            session={"id": order.stripe_session_id, "metadata": {"order_id": str(order.id)}},
            event_created=timezone.now(),
        )

    again = checkout(api, user_id, price)

    assert again.status_code == 200
    assert (again.json()["order_id"], again.json()["status"]) == (first.json()["order_id"], "failed")
    assert len(stripe_fake.sent(SESSIONS)) == 1


def test_it_rejects_a_reused_idempotency_key_with_another_body(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    checkout(api, user_id, price)

    response = checkout(api, user_id, price, success_url="https://app.example/elsewhere")

    assert response.status_code == 422
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"].endswith(":idempotency_key_reused")
    assert Order.objects.count() == 1
    assert len(stripe_fake.sent(SESSIONS)) == 1


def test_the_same_key_from_another_user_is_another_order(api: Client, stripe_fake: StripeFake, price: Price) -> None:
    assert checkout(api, uuid.uuid4(), price).status_code == 201
    assert checkout(api, uuid.uuid4(), price).status_code == 201

    assert Order.objects.count() == 2


def test_concurrent_identical_requests_make_exactly_one_order_and_one_session(
    stripe_fake: StripeFake, price: Price
) -> None:
    stripe_fake.on(SESSIONS, lambda _: time.sleep(0.5))  # slow: every duplicate arrives while it is in flight
    user_id = uuid.uuid4()
    threads_count = 6

    responses = race(*[lambda: checkout(Client(), user_id, price, key="same-key")] * threads_count)

    assert sorted(r.status_code for r in responses) == [200] * (threads_count - 1) + [201]
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert len({r.json()["checkout_url"] for r in responses}) == 1
    assert Order.objects.count() == 1
    assert Customer.objects.count() == 1
    assert len(stripe_fake.sent(SESSIONS)) == 1


def test_stripe_is_called_after_the_order_is_committed_and_outside_any_transaction(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    seen: dict[str, Any] = {}

    def look(call: StripeRequest) -> None:
        seen["in_transaction"] = transaction.get_connection().in_atomic_block
        order_id = call.params["metadata[order_id]"]
        [seen["committed_status"]] = race(  # from another connection
            lambda: Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
        )

    stripe_fake.on(SESSIONS, look)

    assert checkout(api, uuid.uuid4(), price).status_code == 201

    assert seen == {"in_transaction": False, "committed_status": "pending"}


def test_a_session_completed_before_its_request_records_it_stays_completed_and_is_announced_once(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    # given: the buyer pays, and checkout.session.completed is processed, before the request that asked Stripe
    # for the session has recorded it
    def paid_at_once(call: StripeRequest) -> dict[str, Any]:
        session = stripe_fake.standin.checkout_session(call.params)  # what Stripe made
        completed = {**session, "status": "complete", "payment_status": "paid", "customer": None}
        [processed] = race(lambda: _processed(services.order_complete_from_stripe, session=completed))
        assert processed, processed
        return session

    stripe_fake.on(SESSIONS, paid_at_once)

    # when
    response = checkout(api, uuid.uuid4(), price)

    # then: the request records the URL beside the webhook's completion and undoes none of it
    assert response.status_code == 201
    order = Order.objects.get()
    assert (response.json()["status"], order.status) == ("completed", Order.Status.COMPLETED)
    assert order.stripe_session_id and order.checkout_url.endswith(order.stripe_session_id)
    assert order.lease_until is None
    # the session was recorded by the webhook: the request announces no order.created of its own
    assert not OutboxMessage.objects.filter(type="order.created").exists()
    assert not AuditEvent.objects.filter(action="order.created").exists()


def _processed(service: Any, **kwargs: Any) -> Any:
    with transaction.atomic():  # as the webhook processor runs a handler
        return service(**kwargs, event_created=timezone.now())


def test_a_returning_customers_checkout_reads_its_price_and_customer_in_one_statement_without_a_lock(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    assert checkout(api, user_id, price, key="first").status_code == 201  # the customer exists now

    with CaptureQueriesContext(connection) as queries:
        assert checkout(api, user_id, price, key="second").status_code == 201

    # the price with its plan and the customer, then the order; then its session with its audit rows and event,
    # one statement committed by itself (no BEGIN, no COMMIT)
    statements = [query["sql"].split()[0].upper() for query in queries.captured_queries]
    assert statements == ["SELECT", "INSERT", "WITH"], statements
    tables = ("billing_order", "gdpr_auditevent", "gdpr_auditeventpersonal", "tasks_outboxmessage")
    assert all(f'"{table}"' in queries.captured_queries[2]["sql"] for table in tables)
    assert not any("FOR UPDATE" in query["sql"] for query in queries.captured_queries)  # and no savepoint above
    order = Order.objects.select_related("customer").get(idempotency_key="second")
    assert (order.customer.user_id, order.price_id, order.amount, order.status) == (user_id, price.id, 1299, "open")


def test_a_connection_prepares_the_checkouts_statements_once_and_reuses_them(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()

    # when: more checkouts on one connection than psycopg's prepare_threshold
    for n in range(8):
        assert checkout(api, user_id, price, key=f"k{n}").status_code == 201

    # then: PostgreSQL holds the price and customer read, the order's insert, and its update with the inserts of
    # its audit rows and outbox message as this session's prepared statements (parsed and planned once), and
    # every order got its session
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [statement for (statement,) in cursor.fetchall()]
    for start in ('SELECT p."id"', 'INSERT INTO "billing_order" (', 'WITH changed AS (UPDATE "billing_order" SET'):
        assert any(statement.startswith(start) for statement in prepared), (start, prepared)
    assert Order.objects.filter(status=Order.Status.OPEN).count() == 8


def test_a_created_order_is_audited_and_announced_as_an_event(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()

    checkout(api, user_id, price)

    order = Order.objects.get()
    event = AuditEvent.objects.get(action="order.created")
    assert (event.target_type, event.target_id, event.actor_type, event.actor_id) == (
        "order",
        str(order.id),
        "user",
        pseudonym_for(user_id),  # a user is named in the audit chain by their pseudonym only
    )
    message = OutboxMessage.objects.get(type="order.created")
    assert message.subject == f"order:{order.id}"
    assert message.data["user_id"] == str(user_id)
    assert message.data["amount"] == 1299


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price_id": "not-a-uuid"}, "price_id"),
        ({"price_id": str(uuid.uuid4())}, "price_id"),
        ({"success_url": "javascript:alert(1)"}, "success_url"),
        ({"cancel_url": ""}, "cancel_url"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field_and_changes_nothing(
    api: Client, stripe_fake: StripeFake, price: Price, overrides: dict[str, str], field: str
) -> None:
    response = checkout(api, uuid.uuid4(), price, **overrides)

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert field in {error["field"] for error in response.json()["errors"]}
    assert Order.objects.count() == 0
    assert len(stripe_fake.sent(SESSIONS)) == 0


@pytest.mark.parametrize("retired", [{"active": False}, {"plan__active": False}], ids=["price", "plan"])
def test_an_inactive_price_or_plan_cannot_be_bought(
    api: Client, stripe_fake: StripeFake, retired: dict[str, bool]
) -> None:
    user_id = uuid.uuid4()
    assert checkout(api, user_id, PriceFactory(), key="first").status_code == 201  # a returning customer

    response = checkout(api, user_id, PriceFactory(**retired), key="second")

    assert response.status_code == 400
    assert {error["field"] for error in response.json()["errors"]} == {"price_id"}
    assert not Order.objects.filter(idempotency_key="second").exists()
    assert len(stripe_fake.sent(SESSIONS)) == 1


def test_checkout_needs_a_token(api: Client, price: Price) -> None:
    response = api.post(URL, {}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM


def test_another_users_order_is_a_404(api: Client) -> None:
    order = OrderFactory()

    response = api.get(f"/api/v1/orders/{order.id}", HTTP_AUTHORIZATION=bearer(uuid.uuid4()))

    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM


def test_checkout_is_rate_limited_per_user(api: Client, stripe_fake: StripeFake, price: Price, settings: Any) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "2/m"}
    user_id = uuid.uuid4()

    statuses = [checkout(api, user_id, price, key=f"k{i}").status_code for i in range(3)]

    assert statuses == [201, 201, 429]


def test_the_order_created_event_reaches_the_broker(api: Client, stripe_fake: StripeFake, price: Price) -> None:
    consumer = EventsConsumer("order.*")
    try:
        order_id = checkout(api, uuid.uuid4(), price).json()["order_id"]

        outbox_dispatch_pending()

        consumer.drain(expect=1)
        [event] = consumer.bodies()
    finally:
        consumer.close()
    assert (event["type"], event["subject"]) == ("order.created", f"order:{order_id}")
    assert event["data"]["order_id"] == order_id
