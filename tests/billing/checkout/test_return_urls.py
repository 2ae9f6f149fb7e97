"""Checkout return URLs may only send the payer back to one of our own origins (CHECKOUT_RETURN_URL_ORIGINS)."""

import uuid
from typing import Any

import pytest
from django.test import Client

from billing.models import Order, Price
from tests.billing.checkout.support import PROBLEM, SESSIONS, checkout
from tests.support.stripe_fake import StripeFake

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = [
    "https://evil.example/phish",
    "ftp://app.example/ok",
    "http://app.example/ok",  # our host, but not over https
    "https://app.example.evil.example/ok",  # starts with our origin as a string
    "https://app.example@evil.example/ok",  # user info: the browser goes to evil.example
    "https://evil.example\\@app.example/ok",  # a backslash: browsers read it as a path separator
    "https://evil.example#@app.example",
    "https://app.example:8443/ok",  # another port is another origin
    "//evil.example/ok",
    "javascript:alert(1)",
    "https://APP.example.evil.example",
]


@pytest.mark.parametrize("field", ["success_url", "cancel_url"])
@pytest.mark.parametrize("url", HOSTILE)
def test_a_return_url_off_our_origins_is_a_400_and_reaches_no_stripe(
    api: Client, stripe_fake: StripeFake, price: Price, field: str, url: str
) -> None:
    response = checkout(api, uuid.uuid4(), price, **{field: url})

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert field in {error["field"] for error in response.json()["errors"]}
    assert Order.objects.count() == 0
    assert stripe_fake.sent(SESSIONS) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example/ok",
        "https://APP.Example:443/thanks?session_id={CHECKOUT_SESSION_ID}",
        "https://app.example",
    ],
)
def test_a_return_url_on_an_allowed_origin_is_sent_to_stripe(
    api: Client, stripe_fake: StripeFake, price: Price, url: str
) -> None:
    response = checkout(api, uuid.uuid4(), price, success_url=url)

    assert response.status_code == 201
    [call] = stripe_fake.sent(SESSIONS)
    assert call.params["success_url"] == url


def test_the_allowed_origins_come_from_the_setting(
    api: Client, stripe_fake: StripeFake, price: Price, settings: Any
) -> None:
    settings.CHECKOUT_RETURN_URL_ORIGINS = ("https://shop.jia.example",)

    refused = checkout(api, uuid.uuid4(), price)
    allowed = checkout(
        api,
        uuid.uuid4(),
        price,
        key="key-2",
        success_url="https://shop.jia.example/ok",
        cancel_url="https://shop.jia.example/no",
    )

    assert (refused.status_code, allowed.status_code) == (400, 201)
