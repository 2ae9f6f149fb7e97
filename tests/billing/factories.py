import uuid
from datetime import UTC, datetime

import factory
from django.utils import timezone

from billing.models import Customer, Dispute, Feature, Invoice, Order, Payment, Plan, Price, Refund, Subscription


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    user_id = factory.LazyFunction(uuid.uuid4)
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    stripe_customer_id = factory.Sequence(lambda n: f"cus_test{n:08d}")


class FeatureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feature
        django_get_or_create = ("key",)

    key = factory.Sequence(lambda n: f"feature-{n}")
    name = factory.LazyAttribute(lambda o: o.key.title())


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    code = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())
    family_seats = 0
    active = True


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    plan = factory.SubFactory(PlanFactory)
    stripe_price_id = factory.Sequence(lambda n: f"price_test{n:08d}")
    currency = "eur"
    unit_amount = 1299
    interval = Price.Interval.MONTH


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    customer = factory.SubFactory(CustomerFactory)
    price = factory.SubFactory(PriceFactory)
    amount = factory.LazyAttribute(lambda o: o.price.unit_amount)
    currency = factory.LazyAttribute(lambda o: o.price.currency)
    idempotency_key = factory.LazyFunction(lambda: uuid.uuid4().hex)
    request_fingerprint = "0" * 64
    success_url = "https://app.example/ok"
    cancel_url = "https://app.example/cancel"
    status = Order.Status.OPEN
    stripe_session_id = factory.Sequence(lambda n: f"cs_test_factory{n:08d}")
    checkout_url = factory.LazyAttribute(lambda o: f"https://checkout.stripe.com/c/pay/{o.stripe_session_id}")


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    customer = factory.SubFactory(CustomerFactory)
    price = factory.SubFactory(PriceFactory)
    plan = factory.LazyAttribute(lambda o: o.price.plan)
    stripe_subscription_id = factory.Sequence(lambda n: f"sub_test{n:08d}")
    status = Subscription.Status.ACTIVE
    current_period_start = factory.LazyFunction(lambda: datetime(2026, 1, 1, tzinfo=UTC))
    current_period_end = factory.LazyFunction(lambda: datetime(2026, 2, 1, tzinfo=UTC))
    stripe_updated_at = factory.LazyFunction(lambda: datetime(2026, 1, 1, tzinfo=UTC))


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment

    customer = factory.SubFactory(CustomerFactory)
    stripe_payment_intent_id = factory.Sequence(lambda n: f"pi_test{n:08d}")
    stripe_charge_id = factory.Sequence(lambda n: f"ch_test{n:08d}")
    amount = 1299
    currency = "eur"
    status = Payment.Status.SUCCEEDED
    stripe_updated_at = factory.LazyFunction(lambda: datetime(2026, 1, 1, tzinfo=UTC))
    created_at = factory.LazyFunction(timezone.now)


class RefundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Refund

    payment = factory.SubFactory(PaymentFactory)
    amount = 100
    currency = "eur"
    status = Refund.Status.SUCCEEDED
    stripe_refund_id = factory.Sequence(lambda n: f"re_test{n:08d}")


class InvoiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invoice

    customer = factory.SubFactory(CustomerFactory)
    stripe_invoice_id = factory.Sequence(lambda n: f"in_test{n:08d}")
    number = factory.Sequence(lambda n: f"JIA-{n:04d}")
    status = Invoice.Status.PAID
    amount_due = 1299
    amount_paid = 1299
    currency = "eur"
    hosted_invoice_url = factory.LazyAttribute(lambda o: f"https://invoice.stripe.com/i/{o.stripe_invoice_id}")
    stripe_updated_at = factory.LazyFunction(lambda: datetime(2026, 1, 1, tzinfo=UTC))
    created_at = factory.LazyFunction(timezone.now)


class DisputeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dispute

    payment = factory.SubFactory(PaymentFactory, status=Payment.Status.DISPUTED)
    stripe_dispute_id = factory.Sequence(lambda n: f"dp_test{n:08d}")
    amount = 1299
    currency = "eur"
    reason = "fraudulent"
    status = Dispute.Status.NEEDS_RESPONSE
    stripe_updated_at = factory.LazyFunction(lambda: datetime(2026, 1, 1, tzinfo=UTC))
    created_at = factory.LazyFunction(timezone.now)
