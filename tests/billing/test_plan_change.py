"""Plan changes: GET …/change-preview and POST …/change (alice owns, bob is another user).

Stripe is localstripe behind the HTTP-boundary fake (which speaks today's `items[][price]` dialect to the
gateway and localstripe's to localstripe, and keeps subscription schedules)."""

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from django.db import transaction
from django.test import Client

from billing import gateway, services
from billing.models import Price, Subscription, SubscriptionChange
from entitlements.services import entitlements_refresh
from tasks.models import OutboxMessage
from tests.billing.factories import PriceFactory
from tests.entitlements.factories import family_of, plan_with
from tests.support.auth import bearer
from tests.support.races import race, raised
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake
from tests.support.stripe_setup import customer_with_card, price_in_stripe
from tests.support.worker import purge
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process

pytestmark = pytest.mark.django_db(transaction=True)
PROBLEM = "application/problem+json"
ALICE, BOB = uuid.uuid4(), uuid.uuid4()


@pytest.fixture(autouse=True)
def _no_leftover_jobs() -> Any:
    yield
    purge(["webhooks", "outbox"])


@pytest.fixture
def prices(stripe_sdk: stripe.StripeClient) -> dict[str, Price]:
    """basic (4.99/month, sd) < premium (12.99/month, sd + hd); a usd price and a yearly basic too."""
    basic = PriceFactory(plan=plan_with(["sd"], code="basic"), unit_amount=499, stripe_price_id=_pid())
    premium = PriceFactory(plan=plan_with(["sd", "hd"], code="premium"), unit_amount=1299, stripe_price_id=_pid())
    dollars = PriceFactory(plan=premium.plan, unit_amount=1499, currency="usd", stripe_price_id=_pid())
    yearly = PriceFactory(plan=basic.plan, unit_amount=4990, interval="year", stripe_price_id=_pid())
    for price in (basic, premium, dollars, yearly):
        price_in_stripe(stripe_sdk, price)
    return {"basic": basic, "premium": premium, "usd": dollars, "basic-yearly": yearly}


def _pid() -> str:
    return f"price_{uuid.uuid4().hex[:12]}"


def subscribed(sdk: stripe.StripeClient, price: Price) -> Subscription:
    """Alice's subscription to `price`, made in localstripe and recorded from its webhook; entitlements refreshed."""
    customer = customer_with_card(sdk, metadata={"user_id": str(ALICE)})
    created = sdk.v1.subscriptions.create(
        params={"customer": customer["id"], "items": [{"plan": price.stripe_price_id}]}
    )
    fetched = gateway.subscription_retrieve(created.id)
    with transaction.atomic():
        users = services.subscription_upsert_from_stripe(
            stripe_subscription={**fetched, "customer": customer}, event_created=datetime(2026, 1, 1, tzinfo=UTC)
        )
        entitlements_refresh(user_ids=users)
    return Subscription.objects.get(stripe_subscription_id=created.id)


def preview(api: Client, subscription: Subscription, price: Any, user: uuid.UUID = ALICE) -> Any:
    return api.get(
        f"/api/v1/subscriptions/{subscription.id}/change-preview?price_id={price}", HTTP_AUTHORIZATION=bearer(user)
    )


def change(
    api: Client, subscription: Subscription, body: dict[str, Any], key: str | None, user: uuid.UUID = ALICE
) -> Any:
    headers = {"HTTP_AUTHORIZATION": bearer(user)}
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return api.post(f"/api/v1/subscriptions/{subscription.id}/change", body, content_type="application/json", **headers)


def entitled(api: Client, feature: str) -> bool:
    return bool(api.get(f"/api/v1/entitlements/{feature}", HTTP_AUTHORIZATION=bearer(ALICE)).json()["entitled"])


def stripe_updates(fake: StripeFake, subscription: Subscription) -> list[Any]:
    return [
        r
        for r in fake.sent(f"POST /v1/subscriptions/{subscription.stripe_subscription_id}")
        if "items[0][price]" in r.params
    ]


def stripe_switches_price(api: Client, sdk: stripe.StripeClient, subscription: Subscription, price: Price) -> None:
    """The period rolls: Stripe's schedule switches the price and says so (a signed webhook, processed)."""
    rolled = sdk.v1.subscriptions.retrieve(subscription.stripe_subscription_id).to_dict()
    rolled["items"]["data"][0]["price"] = {"id": price.stripe_price_id}
    rolled["items"]["data"][0].pop("plan", None)
    rolled.pop("plan", None)
    event = stripe_event("customer.subscription.updated", rolled, created=int(time.time()) + 5)
    assert api.post("/webhooks/stripe/", **delivery(event)).status_code == 200
    row = WebhookEvent.objects.get(event_id=event["id"])
    assert webhook_event_process(event_id=row.id) == WebhookEvent.Status.PROCESSED, row.last_error


# --- upgrade ---------------------------------------------------------------------------------------


def test_an_upgrade_previews_then_charges_the_previewed_proration_now_and_grants_at_once(
    api: Client, prices: dict[str, Price], stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    subscription = subscribed(stripe_sdk, prices["basic"])
    assert not entitled(api, "hd")

    shown = preview(api, subscription, prices["premium"].id)

    assert shown.status_code == 200, shown.content
    body = shown.json()
    assert body["kind"] == "upgrade"
    assert body["currency"] == "eur"
    assert body["amount_due"] == 1299 - 499  # localstripe: the new price less the unused paid time
    assert {"description", "amount"} <= set(body["lines"][0])
    assert abs(body["proration_date"] - time.time()) < 60
    [sent_preview] = stripe_fake.sent("POST /v1/invoices/create_preview")
    assert sent_preview.params["subscription_details[items][0][price]"] == prices["premium"].stripe_price_id
    assert sent_preview.params["subscription_details[proration_behavior]"] == "always_invoice"
    assert SubscriptionChange.objects.count() == 0  # a preview changes nothing

    response = change(
        api, subscription, {"price_id": str(prices["premium"].id), "proration_date": body["proration_date"]}, "k1"
    )

    assert response.status_code == 200, response.content
    assert response.json()["plan"] == "premium"
    [update] = stripe_updates(stripe_fake, subscription)
    assert update.params["items[0][price]"] == prices["premium"].stripe_price_id
    assert update.params["proration_behavior"] == "always_invoice"
    assert update.params["proration_date"] == str(body["proration_date"])  # the price shown is the price charged
    assert update.idempotency_key
    at_stripe = stripe_sdk.v1.subscriptions.retrieve(subscription.stripe_subscription_id)
    assert at_stripe["items"]["data"][0]["plan"]["id"] == prices["premium"].stripe_price_id
    assert entitled(api, "hd")
    changed = OutboxMessage.objects.get(type="subscription.changed")
    assert changed.data["change"]["kind"] == "upgrade"
    assert changed.data["change"]["status"] == "applied"
    assert (changed.data["change"]["from_plan"], changed.data["change"]["to_plan"]) == ("basic", "premium")


def test_the_same_key_and_body_again_is_the_same_change_once(
    api: Client, prices: dict[str, Price], stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    subscription = subscribed(stripe_sdk, prices["basic"])
    body = {"price_id": str(prices["premium"].id)}
    first = change(api, subscription, body, "same")

    again = change(api, subscription, body, "same")

    assert again.status_code == 200
    assert again.json() == first.json()
    assert len(stripe_updates(stripe_fake, subscription)) == 1
    assert SubscriptionChange.objects.count() == 1
    assert OutboxMessage.objects.filter(type="subscription.changed").count() == 1


def test_a_key_reused_with_another_body_is_a_422_and_changes_nothing(
    api: Client, prices: dict[str, Price], stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    subscription = subscribed(stripe_sdk, prices["basic"])
    assert change(api, subscription, {"price_id": str(prices["premium"].id)}, "reused").status_code == 200

    other = change(api, subscription, {"price_id": str(prices["basic"].id)}, "reused")

    assert other.status_code == 422
    assert other["Content-Type"] == PROBLEM
    assert other.json()["type"].endswith(":idempotency_key_reused")
    assert len(stripe_updates(stripe_fake, subscription)) == 1
    assert Subscription.objects.get().plan.code == "premium"
    assert stripe_fake.sent("POST /v1/subscription_schedules") == []


# --- downgrade -------------------------------------------------------------------------------------


def test_a_downgrade_waits_for_the_period_end_and_entitlements_follow_stripes_switch(
    api: Client, prices: dict[str, Price], stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    subscription = subscribed(stripe_sdk, prices["premium"])
    assert entitled(api, "hd")
    shown = preview(api, subscription, prices["basic"].id).json()
    assert shown["kind"] == "downgrade"
    assert shown["effective_at"] == subscription.current_period_end.isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]

    response = change(api, subscription, {"price_id": str(prices["basic"].id)}, "down")

    assert response.status_code == 200, response.content
    assert response.json()["plan"] == "premium"  # until the period ends
    assert stripe_updates(stripe_fake, subscription) == []
    [created] = stripe_fake.sent("POST /v1/subscription_schedules")
    assert created.params == {"from_subscription": subscription.stripe_subscription_id}
    [phases] = stripe_fake.sent("POST /v1/subscription_schedules/")
    period_end = int(subscription.current_period_end.timestamp())  # type: ignore[union-attr]
    assert phases.params["phases[0][items][0][price]"] == prices["premium"].stripe_price_id
    assert phases.params["phases[0][end_date]"] == str(period_end)
    assert phases.params["phases[1][items][0][price]"] == prices["basic"].stripe_price_id
    assert phases.params["end_behavior"] == "release"
    assert entitled(api, "hd")  # the request changes no access
    assert SubscriptionChange.objects.get().status == "scheduled"
    assert OutboxMessage.objects.get(type="subscription.changed").data["change"]["status"] == "scheduled"

    stripe_switches_price(api, stripe_sdk, subscription, prices["basic"])

    assert Subscription.objects.get().plan.code == "basic"
    assert not entitled(api, "hd")
    assert entitled(api, "sd")
    assert SubscriptionChange.objects.get().status == "applied"
    statuses = [
        m.data["change"]["status"] for m in OutboxMessage.objects.filter(type="subscription.changed").order_by("id")
    ]
    assert statuses == ["scheduled", "applied"]


def test_a_second_change_while_a_downgrade_is_scheduled_is_a_409(
    api: Client, prices: dict[str, Price], stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    subscription = subscribed(stripe_sdk, prices["premium"])
    assert change(api, subscription, {"price_id": str(prices["basic"].id)}, "first").status_code == 200

    second = change(api, subscription, {"price_id": str(prices["basic-yearly"].id)}, "second")

    assert second.status_code == 409
    assert second["Content-Type"] == PROBLEM
    assert second.json()["type"].endswith(":subscription_not_changeable")
    assert SubscriptionChange.objects.count() == 1


# --- refused ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status", "field"),
    [
        ("unknown price", 400, "price_id"),
        ("same price", 400, "price_id"),
        ("other currency", 400, "price_id"),
        ("not a uuid", 400, "price_id"),
        ("proration date outside the period", 400, "proration_date"),
        ("no key", 400, None),
        ("bobs subscription", 404, None),
        ("set to cancel", 409, None),
    ],
)
def test_a_change_that_cannot_be_made_is_a_problem_and_changes_nothing(
    api: Client,
    prices: dict[str, Price],
    stripe_sdk: stripe.StripeClient,
    stripe_fake: StripeFake,
    case: str,
    status: int,
    field: str | None,
) -> None:
    subscription = subscribed(stripe_sdk, prices["basic"])
    body: dict[str, Any] = {"price_id": str(prices["premium"].id)}
    key: str | None = "key"
    user = ALICE
    if case == "unknown price":
        body["price_id"] = str(uuid.uuid4())
    elif case == "same price":
        body["price_id"] = str(prices["basic"].id)
    elif case == "other currency":
        body["price_id"] = str(prices["usd"].id)
    elif case == "not a uuid":
        body["price_id"] = "premium"
    elif case == "proration date outside the period":
        body["proration_date"] = 1_600_000_000
    elif case == "no key":
        key = None
    elif case == "bobs subscription":
        user = BOB
    elif case == "set to cancel":
        Subscription.objects.update(cancel_at_period_end=True)

    response = change(api, subscription, body, key, user=user)

    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    if field:
        assert response.json()["errors"][0]["field"] == field
    assert SubscriptionChange.objects.count() == 0
    assert stripe_updates(stripe_fake, subscription) == []
    assert Subscription.objects.get().plan.code == "basic"
    assert not OutboxMessage.objects.filter(type="subscription.changed").exists()


def test_previews_refuse_others_subscriptions_and_unknown_prices(
    api: Client, prices: dict[str, Price], stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    subscription = subscribed(stripe_sdk, prices["basic"])

    assert preview(api, subscription, prices["premium"].id, user=BOB).status_code == 404
    assert preview(api, subscription, uuid.uuid4()).status_code == 400
    assert preview(api, subscription, "nope").status_code == 400
    assert stripe_fake.sent("POST /v1/invoices/create_preview") == []


def test_two_identical_changes_at_once_make_one_change_at_stripe(
    api: Client, prices: dict[str, Price], stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    subscription = subscribed(stripe_sdk, prices["premium"])
    body = {"price_id": str(prices["basic"].id)}
    stripe_fake.on("POST /v1/subscription_schedules", lambda _: time.sleep(0.5))  # Stripe is slow: they overlap

    outcomes = race(*[lambda: change(Client(), subscription, body, "twice") for _ in range(2)])

    assert raised(outcomes) == []
    assert [response.status_code for response in outcomes] == [200, 200]
    assert outcomes[0].json() == outcomes[1].json()
    assert len(stripe_fake.sent("POST /v1/subscription_schedules")) == 1
    assert SubscriptionChange.objects.get().status == "scheduled"
    assert OutboxMessage.objects.filter(type="subscription.changed").count() == 1


def test_a_family_downgrade_keeps_members_entitled_until_stripe_switches_the_price(
    api: Client, stripe_sdk: stripe.StripeClient, stripe_fake: StripeFake
) -> None:
    family = PriceFactory(
        plan=plan_with(["hd", "offline"], family_seats=5, code="family"), unit_amount=1299, stripe_price_id=_pid()
    )
    solo = PriceFactory(plan=plan_with(["hd"], code="solo"), unit_amount=499, stripe_price_id=_pid())
    for price in (family, solo):
        price_in_stripe(stripe_sdk, price)
    subscription = subscribed(stripe_sdk, family)
    family_of(ALICE, BOB)
    entitlements_refresh(user_ids={ALICE})

    def bob_has(feature: str) -> bool:
        answer = api.get(f"/api/v1/entitlements/{feature}", HTTP_AUTHORIZATION=bearer(BOB)).json()
        return bool(answer["entitled"])

    assert bob_has("offline")

    assert change(api, subscription, {"price_id": str(solo.id)}, "to-solo").status_code == 200

    assert bob_has("offline")  # the family is paid for until the period ends
    stripe_switches_price(api, stripe_sdk, subscription, solo)

    assert not bob_has("offline")
    assert not bob_has("hd")
    assert entitled(api, "hd")  # alice keeps what the smaller plan grants
