import subprocess
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from billing import gateway, services
from billing.models import Customer, Order, Price
from gdpr.models import AuditEvent
from gdpr.registry import pseudonym_for
from tasks.models import OutboxMessage
from tasks.outbox import outbox_dispatch_pending
from tests.billing.factories import OrderFactory, PriceFactory
from tests.support.auth import bearer
from tests.support.broker import EventsConsumer
from tests.support.races import race
from tests.support.stripe_fake import StripeFake, StripeRequest
from tests.support.worker import worker_env

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/checkout/sessions"
PROBLEM = "application/problem+json"
SESSIONS = "POST /v1/checkout/sessions"  # at Stripe


def checkout(client: Client, user_id: uuid.UUID, price: Price, *, key: str | None = "key-1", **overrides: Any) -> Any:
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    body.update(overrides)
    headers = {"HTTP_AUTHORIZATION": bearer(user_id, email="buyer@example.com")}
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(URL, body, content_type="application/json", **headers)


@pytest.fixture
def price() -> Price:
    return PriceFactory(stripe_price_id="price_family_month", plan__code="family", unit_amount=1299)


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


def test_when_stripe_keeps_failing_the_order_is_failed_and_the_client_gets_a_503(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_fake.fail_next(SESSIONS, 500, {"type": "api_error", "message": "Something went wrong"})

    response = checkout(api, uuid.uuid4(), price)

    assert response.status_code == 503
    assert response["Content-Type"] == PROBLEM
    assert response.json()["type"].endswith(":stripe_unavailable")
    assert int(response["Retry-After"]) > 0
    order = Order.objects.get()
    assert (order.status, order.failure_code, order.stripe_session_id) == ("failed", "stripe_unavailable", None)
    assert AuditEvent.objects.filter(action="order.failed", target_id=str(order.id)).count() == 1
    assert not OutboxMessage.objects.filter(type="order.created").exists()


def test_a_stripe_500_is_retried_with_the_same_idempotency_key_and_succeeds(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    stripe_fake.fail_next(SESSIONS, 500, {"type": "api_error", "message": "Something went wrong"})

    response = checkout(api, uuid.uuid4(), price)

    assert response.status_code == 201
    assert [call.idempotency_key for call in stripe_fake.sent(SESSIONS)] == [f"order:{response.json()['order_id']}"] * 2
    assert Order.objects.get().status == "open"


def test_retrying_the_same_key_after_stripe_was_down_tries_again_and_succeeds(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    user_id = uuid.uuid4()
    stripe_fake.fail_next(SESSIONS, 503, {"type": "api_error", "message": "Down"})
    assert checkout(api, user_id, price).status_code == 503

    response = checkout(api, user_id, price)

    assert response.status_code == 200
    assert response.json()["status"] == "open"
    assert Order.objects.count() == 1
    assert {call.idempotency_key for call in stripe_fake.sent(SESSIONS)} == {f"order:{response.json()['order_id']}"}


def test_a_card_declined_by_stripe_is_a_402_and_a_failed_order_replayed_as_such(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    stripe_fake.fail_next(
        SESSIONS,
        402,
        {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "message": "Declined"},
    )

    response = checkout(api, user_id, price)
    replay = checkout(api, user_id, price)

    assert response.status_code == replay.status_code == 402
    assert response.json()["type"].endswith(":card_declined")
    assert Order.objects.get().status == "failed"
    assert len(stripe_fake.sent(SESSIONS)) == 1  # a permanent failure is replayed, not retried


def test_stripe_rate_limiting_us_is_a_503_saying_so(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    stripe_fake.fail_next(SESSIONS, 429, {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many"})

    response = checkout(api, uuid.uuid4(), price)

    assert response.status_code == 503
    assert response.json()["type"].endswith(":stripe_rate_limited")
    assert response["Retry-After"]


def test_stripe_refusing_the_request_is_a_502_that_names_it(api: Client, stripe_fake: StripeFake, price: Price) -> None:
    stripe_fake.fail_next(
        SESSIONS, 400, {"type": "invalid_request_error", "message": "No such price: 'price_family_month'"}
    )

    response = checkout(api, uuid.uuid4(), price)

    assert response.status_code == 502
    assert response.json()["type"].endswith(":stripe_request_failed")
    assert "No such price" in response.json()["detail"]
    assert Order.objects.get().status == "failed"


def test_without_a_stripe_key_checkout_answers_503_not_configured_and_writes_nothing(
    api: Client, price: Price, settings: Any
) -> None:
    settings.STRIPE_API_KEY = ""

    response = checkout(api, uuid.uuid4(), price)

    assert response.status_code == 503
    assert response.json()["type"].endswith(":stripe_not_configured")
    assert "not configured" in response.json()["detail"]
    assert Order.objects.count() == 0
    assert api.get("/api/v1/plans").status_code == 200  # the rest works


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


def test_an_inactive_price_cannot_be_bought(api: Client, stripe_fake: StripeFake) -> None:
    retired = PriceFactory(active=False)

    assert checkout(api, uuid.uuid4(), retired).status_code == 400
    assert len(stripe_fake.sent(SESSIONS)) == 0


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


# --- Stripe down: the circuit breaker -------------------------------------------------------------


def test_when_stripe_is_down_the_breaker_opens_then_half_opens_and_recovers(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_fake.proxy.cut()  # new customers need POST /v1/customers first: it now meets a closed port

    statuses = [checkout(api, uuid.uuid4(), price).status_code for _ in range(settings.STRIPE_BREAKER_FAIL_MAX)]
    assert statuses == [503] * settings.STRIPE_BREAKER_FAIL_MAX
    assert gateway.breaker_state() == "open"

    # Open: answered at once, without trying Stripe, with a Retry-After until the half-open probe.
    started = time.monotonic()
    fast = checkout(api, uuid.uuid4(), price)
    assert time.monotonic() - started < 0.5
    assert fast.status_code == 503
    assert "circuit breaker" in fast.json()["detail"]
    assert 1 <= int(fast["Retry-After"]) <= settings.STRIPE_BREAKER_RESET_SECONDS + 1
    assert len(stripe_fake.sent(SESSIONS)) == 0

    stripe_fake.proxy.restore()
    time.sleep(settings.STRIPE_BREAKER_RESET_SECONDS + 1.1)  # the reset timeout passes: one probe may go

    recovered = checkout(api, uuid.uuid4(), price)
    assert recovered.status_code == 201
    assert gateway.breaker_state() == "closed"


def test_a_failed_probe_while_half_open_opens_the_breaker_again(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_fake.proxy.cut()
    for _ in range(settings.STRIPE_BREAKER_FAIL_MAX):
        checkout(api, uuid.uuid4(), price)
    time.sleep(settings.STRIPE_BREAKER_RESET_SECONDS + 1.1)

    probe = checkout(api, uuid.uuid4(), price)

    assert probe.status_code == 503
    assert gateway.breaker_state() == "open"


def test_declined_cards_do_not_open_the_breaker(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    for _ in range(settings.STRIPE_BREAKER_FAIL_MAX + 1):
        stripe_fake.fail_next(SESSIONS, 402, {"type": "card_error", "code": "card_declined", "message": "Declined"})
        checkout(api, uuid.uuid4(), price)

    assert gateway.breaker_state() == "closed"
    assert checkout(api, uuid.uuid4(), price).status_code == 201


def test_every_process_sees_the_same_breaker(api: Client, stripe_fake: StripeFake, price: Price, settings: Any) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_fake.proxy.cut()
    for _ in range(settings.STRIPE_BREAKER_FAIL_MAX):
        checkout(api, uuid.uuid4(), price)

    # Another process (as another gunicorn worker would be) reads the breaker from Redis.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from billing import gateway; print(gateway.breaker_state())",
        ],
        env={**worker_env(), "DJANGO_SETTINGS_MODULE": "payments_project.settings.test"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert other.stdout.strip().splitlines()[-1] == "open"


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


def test_a_duplicate_that_waits_too_long_for_the_first_request_gets_a_409_to_retry(
    stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.BILLING_IN_FLIGHT_WAIT_SECONDS = 0.2
    stripe_fake.on(SESSIONS, lambda _: time.sleep(1.5))
    user_id = uuid.uuid4()

    def buy(pause: float) -> Any:
        time.sleep(pause)  # the second arrives while the first is talking to Stripe
        return checkout(Client(), user_id, price, key="slow")

    responses = race(lambda: buy(0), lambda: buy(0.3))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409]
    conflict = next(r for r in responses if r.status_code == 409)
    assert conflict.json()["type"].endswith(":request_in_progress")
    assert conflict["Retry-After"]
    assert len(stripe_fake.sent(SESSIONS)) == 1


def test_an_order_whose_request_died_before_stripe_answered_is_finished_by_the_retry(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()
    fingerprint = services.checkout_fingerprint(
        price_id=price.id, success_url="https://app.example/ok", cancel_url="https://app.example/no"
    )
    orphan = OrderFactory(
        customer__user_id=user_id,
        price=price,
        idempotency_key="key-1",
        request_fingerprint=fingerprint,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() - timedelta(seconds=1),
    )

    response = checkout(api, user_id, price)

    assert response.status_code == 200
    assert response.json()["order_id"] == str(orphan.id)
    assert response.json()["status"] == "open"
    assert [call.idempotency_key for call in stripe_fake.sent(SESSIONS)] == [f"order:{orphan.id}"]


def test_an_order_left_pending_by_a_dead_request_is_settled_by_the_sweep_with_the_same_stripe_key(
    stripe_fake: StripeFake, price: Price
) -> None:
    # given: a request that wrote its order and died before Stripe answered (its lease ran out)
    abandoned = OrderFactory(
        price=price,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    fresh = OrderFactory(
        price=price,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() + timedelta(minutes=1),
    )

    # when
    settled = services.orders_resolve_abandoned()
    again = services.orders_resolve_abandoned()

    # then
    abandoned.refresh_from_db()
    assert (settled, again) == (1, 0)
    assert abandoned.status == Order.Status.OPEN
    assert abandoned.stripe_session_id and abandoned.checkout_url
    assert [call.idempotency_key for call in stripe_fake.sent(SESSIONS)] == [f"order:{abandoned.id}"]
    assert Order.objects.get(id=fresh.id).status == Order.Status.PENDING  # its request is still at work


def test_an_abandoned_order_stripe_refuses_is_failed_with_the_reason(stripe_fake: StripeFake, price: Price) -> None:
    abandoned = OrderFactory(
        price=price,
        status=Order.Status.PENDING,
        stripe_session_id=None,
        checkout_url="",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    stripe_fake.fail_next(SESSIONS, 400, {"type": "invalid_request_error", "message": "No such price"})

    services.orders_resolve_abandoned()

    abandoned.refresh_from_db()
    assert abandoned.status == Order.Status.FAILED
    assert "No such price" in abandoned.failure_message
