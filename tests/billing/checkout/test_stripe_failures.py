"""Checkout when Stripe fails, refuses or is down: the client's answer, the order's state, the breaker."""

import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import redis
from django.test import Client

from billing import gateway
from billing.models import Order, Price
from gdpr.models import AuditEvent
from tasks.models import OutboxMessage
from tests.billing.checkout.support import PROBLEM, SESSIONS, checkout
from tests.support.stripe_fake import StripeFake
from tests.support.worker import worker_env

pytestmark = pytest.mark.django_db(transaction=True)


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


def test_stripe_refusing_the_request_is_a_502_in_our_words(api: Client, stripe_fake: StripeFake, price: Price) -> None:
    stripe_fake.fail_next(
        SESSIONS, 400, {"type": "invalid_request_error", "message": "No such price: 'price_family_month'"}
    )

    response = checkout(api, uuid.uuid4(), price)

    assert response.status_code == 502
    assert response.json()["type"].endswith(":stripe_request_failed")
    assert response.json()["detail"] == "Stripe refused the request"  # Stripe's text stays in the logs
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


def test_a_success_clears_the_failures_counted_before_it(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    assert checkout(api, uuid.uuid4(), price).status_code == 201  # this user's Stripe customer exists now
    user = uuid.uuid4()
    assert checkout(api, user, price, key="first").status_code == 201
    outage = {"type": "api_error", "message": "Something went wrong"}

    for attempt in range(2):  # one failure short of opening, twice, with a success between
        for n in range(settings.STRIPE_BREAKER_FAIL_MAX - 1):
            stripe_fake.fail_next(SESSIONS, 500, outage)
            assert checkout(api, user, price, key=f"down-{attempt}-{n}").status_code == 503
        assert checkout(api, user, price, key=f"up-{attempt}").status_code == 201

    assert gateway.breaker_state() == "closed"


def test_a_success_with_no_failure_counted_writes_nothing_to_the_breaker(
    api: Client, stripe_fake: StripeFake, price: Price, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = uuid.uuid4()
    assert checkout(api, user, price, key="first").status_code == 201
    sent: list[tuple[Any, ...]] = []
    execute = redis.Redis.execute_command

    def counted(client: redis.Redis, *args: Any, **options: Any) -> Any:
        sent.append(args)
        return execute(client, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counted)  # redis-py's, not ours

    assert checkout(api, user, price, key="second").status_code == 201

    breaker_commands = [args[0] for args in sent if any(":stripe:" in str(arg) for arg in args[1:])]
    # the state, read with the failure count (or none: the first checkout's read is remembered); no write
    assert breaker_commands in (["MGET"], [])
    assert gateway.breaker_state() == "closed"
