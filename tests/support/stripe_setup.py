"""Real objects in localstripe, made with the test's own client (`stripe_sdk`), as a dashboard or a
customer's browser would make them."""

from typing import Any

import stripe

from billing.models import Price

CARD_OK = "4242424242424242"


def card_for(sdk: stripe.StripeClient, customer_id: str, *, number: str = CARD_OK) -> str:
    """A card attached to the customer; its payment method id."""
    card = sdk.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    sdk.v1.payment_methods.attach(card.id, params={"customer": customer_id})
    return card.id


def customer_with_card(sdk: stripe.StripeClient, **params: Any) -> dict[str, Any]:
    """A customer (as Stripe returns it) paying its invoices with a working card, whose id is under "card"."""
    customer = sdk.v1.customers.create(params=params).to_dict()
    card = card_for(sdk, customer["id"])
    sdk.v1.customers.update(customer["id"], params={"invoice_settings": {"default_payment_method": card}})
    return {**customer, "card": card}


def price_in_stripe(sdk: stripe.StripeClient, price: Price) -> None:
    """`price` in localstripe, as a legacy plan with the price's id (localstripe has no prices)."""
    product = sdk.v1.products.create(params={"name": price.plan.name})
    sdk.v1.plans.create(
        params={
            "id": price.stripe_price_id,
            "amount": price.unit_amount,
            "currency": price.currency,
            "interval": "year" if price.interval == Price.Interval.YEAR else "month",
            "product": product.id,
        }
    )


def subscription_for(sdk: stripe.StripeClient, customer_id: str, price: Price) -> str:
    """A subscription to `price` (as a legacy plan with the price's id); its id."""
    price_in_stripe(sdk, price)
    created = sdk.v1.subscriptions.create(params={"customer": customer_id, "items": [{"plan": price.stripe_price_id}]})
    return str(created.id)


def confirmed_intent(sdk: stripe.StripeClient, customer: dict[str, Any], amount: int) -> dict[str, Any]:
    """A payment intent for `amount` euro cents with the customer's card, confirmed (as Stripe returns it)."""
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "eur",
            "customer": customer["id"],
            "payment_method": customer["card"],
            "confirm": True,
        }
    )
    return intent.to_dict()
