"""A checkout's common case is answered without DRF's dispatch (billing.api.views.checkout_session_create),
and every such answer is the one CheckoutSessionCreateApi gives: a request the plain view leaves to it (here,
an Accept header DRF's content negotiation reads) shows what that is."""

import uuid
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from billing.api.serializers import CheckoutInput, OrderOutput, common_checkout_input, order_body
from billing.models import Order, Price
from tests.billing.checkout.support import SESSIONS, URL
from tests.billing.factories import OrderFactory
from tests.support.auth import bearer
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)

DRF_ONLY = {"HTTP_ACCEPT": "application/json, text/plain"}  # JSON all the same, as DRF negotiates it


def post(client: Client, user_id: uuid.UUID, price: Price, key: str, *, drf: bool = False, **overrides: Any) -> Any:
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    return client.post(
        URL,
        {**body, **overrides},
        content_type="application/json",
        HTTP_AUTHORIZATION=bearer(user_id, email="buyer@example.com", email_verified=True),
        HTTP_IDEMPOTENCY_KEY=key,
        HTTP_X_REQUEST_ID="plain-or-drf-0001",  # the problem documents carry it
        **(DRF_ONLY if drf else {}),
    )


def answer(response: Any) -> tuple[int, bytes, dict[str, str | None]]:
    headers = ("Content-Type", "Content-Length", "Allow", "Location", "Retry-After")
    return response.status_code, response.content, {name: response.get(name) for name in headers}


def test_a_checkout_and_its_replay_answer_as_the_drf_view_does(
    api: Client, stripe_fake: StripeFake, price: Price
) -> None:
    user_id = uuid.uuid4()

    created = post(api, user_id, price, "key-1")
    replayed = post(api, user_id, price, "key-1")
    replayed_by_drf = post(api, user_id, price, "key-1", drf=True)

    assert created.status_code == 201, created.content
    assert answer(replayed) == answer(replayed_by_drf)
    assert answer(replayed) == (200, *answer(created)[1:])  # the same order, body and headers
    assert created["Location"] == f"/api/v1/orders/{created.json()['order_id']}"


def test_a_rate_limited_checkout_answers_as_the_drf_view_does(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "checkout": "1/m"}
    user_id = uuid.uuid4()

    with time_machine.travel(timezone.now(), tick=False):  # one window, one Retry-After
        assert post(api, user_id, price, "key-1").status_code == 201
        limited = post(api, user_id, price, "key-2")
        limited_by_drf = post(api, user_id, price, "key-3", drf=True)

    assert limited.status_code == 429
    assert answer(limited) == answer(limited_by_drf)


def test_a_checkout_the_service_refuses_answers_as_the_drf_view_does(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    user_id = uuid.uuid4()
    assert post(api, user_id, price, "made").status_code == 201
    no_such_price = str(uuid.uuid4())
    declined = {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "message": "No"}

    pairs = {}
    pairs["no such price"] = [
        post(api, user_id, price, f"price-{drf}", drf=drf, price_id=no_such_price) for drf in (False, True)
    ]
    pairs["key reused"] = [
        post(api, user_id, price, "made", drf=drf, cancel_url="https://app.example/x") for drf in (False, True)
    ]
    stripe_fake.fail_next(SESSIONS, 503, {"type": "api_error", "message": "Down"}, times=2)
    pairs["stripe down"] = [post(api, user_id, price, f"down-{drf}", drf=drf) for drf in (False, True)]
    stripe_fake.fail_next(SESSIONS, 402, declined, times=2)
    pairs["card declined"] = [post(api, user_id, price, f"declined-{drf}", drf=drf) for drf in (False, True)]

    statuses = {case: plain.status_code for case, (plain, _) in pairs.items()}
    assert statuses == {"no such price": 400, "key reused": 422, "stripe down": 503, "card declined": 402}
    assert {case: answer(plain) for case, (plain, _) in pairs.items()} == {
        case: answer(drf) for case, (_, drf) in pairs.items()
    }


def bodies(price_id: str) -> dict[str, Any]:
    common = {"price_id": price_id, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    return {
        "common": common,
        # valid, but CheckoutInput's to read: it parses the id, strips the URL
        "upper-case price id": {**common, "price_id": price_id.upper()},
        "price id in braces": {**common, "price_id": f"{{{price_id}}}"},
        "padded URL": {**common, "success_url": " https://app.example/ok "},
        # invalid
        "price id as a number": {**common, "price_id": 1},
        "URL elsewhere": {**common, "success_url": "https://elsewhere.example/ok"},
        "URL too long": {**common, "cancel_url": "https://app.example/" + "x" * 2048},
        "URL as a number": {**common, "cancel_url": 5},
        "URL null": {**common, "cancel_url": None},
        "URL with a line separator": {**common, "success_url": "https://app.example/ok\u2028"},
        "unknown field": {**common, "extra": 1},
        "missing field": {"price_id": price_id, "success_url": "https://app.example/ok"},
        "list": [common],
    }


def test_the_common_body_is_read_as_checkout_input_reads_it(price: Price) -> None:
    recognised = []
    for case, body in bodies(str(price.id)).items():
        serializer = CheckoutInput(data=body)

        common = common_checkout_input(body)

        if common is not None:
            recognised.append(case)
            assert serializer.is_valid() and common == serializer.validated_data, case
    assert recognised == ["common"]  # the rest goes to the serializer, which names what is wrong


@pytest.mark.parametrize("status", [s.value for s in Order.Status])
def test_an_order_is_written_as_order_output_writes_it(status: str) -> None:
    made = OrderFactory(status=status)
    unsent = OrderFactory(status=status, stripe_session_id=None, checkout_url="")

    for order in (made, Order.objects.get(pk=made.pk), unsent):
        assert JSONRenderer().render(order_body(order)) == JSONRenderer().render(OrderOutput(order).data)


def test_an_empty_accept_header_is_still_refused_as_drf_refuses_it(api: Client, price: Price) -> None:
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    headers = {"HTTP_AUTHORIZATION": bearer(uuid.uuid4()), "HTTP_IDEMPOTENCY_KEY": "key-1"}

    response = api.post(URL, body, content_type="application/json", HTTP_ACCEPT="", **headers)  # not "*/*" to DRF

    assert response.status_code == 406
    assert response["Content-Type"] == "application/problem+json"
    assert not Order.objects.exists()
