"""Billing: customers, the catalog (features, plans, prices), checkout orders, subscriptions,
payments, refunds, invoices and disputes.

Money is integer minor units plus a lower-case ISO-4217 code (Stripe's spelling). Every row that
mirrors a Stripe object keeps `stripe_updated_at`, the provider time of the last change applied to
it, so an older event delivered late never overwrites a newer state.
"""

from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from uuid6 import uuid7

CURRENCY_PATTERN = r"^[a-z]{3}$"


def _currency_check(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(currency__regex=CURRENCY_PATTERN), name=name)


def _status_check(name: str, choices: type[models.TextChoices]) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(status__in=choices.values), name=name)


class Customer(models.Model):
    """A user as Stripe knows them: created on the first checkout, or from a Stripe customer whose
    metadata.user_id names the user (the dashboard, a migration)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    user_id = models.UUIDField(unique=True)
    email = models.EmailField(blank=True)
    stripe_customer_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_deleted_at = models.DateTimeField(null=True, blank=True)
    stripe_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.email or str(self.user_id)


class Feature(models.Model):
    """Something a plan grants; entitlements resolves users' features through Plan.features."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=255)

    def __str__(self) -> str:
        return self.key


class Plan(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    family_seats = models.PositiveSmallIntegerField(default=0, help_text="members besides the owner")
    active = models.BooleanField(default=True)
    features = models.ManyToManyField(Feature, related_name="plans", blank=True)

    def __str__(self) -> str:
        return self.code


class PriceInterval(models.TextChoices):
    MONTH = "month"
    YEAR = "year"
    ONE_TIME = "one_time"


class Price(models.Model):
    Interval = PriceInterval

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="prices")
    stripe_price_id = models.CharField(max_length=255, unique=True)
    currency = models.CharField(max_length=3)
    unit_amount = models.PositiveBigIntegerField()
    interval = models.CharField(max_length=16, choices=Interval.choices)
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            _currency_check("billing_price_currency_iso4217"),
            models.CheckConstraint(condition=Q(interval__in=PriceInterval.values), name="billing_price_interval_valid"),
        ]

    def __str__(self) -> str:
        return self.stripe_price_id

    @property
    def is_recurring(self) -> bool:
        return self.interval != self.Interval.ONE_TIME


class OrderStatus(models.TextChoices):
    PENDING = "pending"  # written, Stripe not answered yet
    OPEN = "open"  # the session exists: the client has a checkout URL
    # Checkout is done but paid with a bank debit whose money has not arrived yet
    # (checkout.session.completed with payment_status "unpaid"): the async events complete or fail it.
    PROCESSING = "processing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    FAILED = "failed"


class Order(models.Model):
    """One checkout attempt: unique per (customer, Idempotency-Key). Written before Stripe is called,
    so there is never a Stripe session without an order; failed if the call fails."""

    Status = OrderStatus
    # failure_code of an order whose checkout went through but whose bank debit was refused afterwards.
    ASYNC_PAYMENT_FAILED = "async_payment_failed"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="orders")
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="orders")
    amount = models.PositiveBigIntegerField()  # the price when ordered
    currency = models.CharField(max_length=3)
    idempotency_key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)  # sha256 of the canonical request body
    success_url = models.URLField(max_length=2048)
    cancel_url = models.URLField(max_length=2048)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    stripe_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    checkout_url = models.URLField(max_length=2048, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.TextField(blank=True)
    # Whoever holds an unexpired lease is the one calling Stripe for this order; a request that
    # finds it expired (its holder crashed) takes it over and calls again with the same Stripe
    # idempotency key, so Stripe still makes only one session.
    lease_until = models.DateTimeField(null=True, blank=True)
    # W3C traceparent of the checkout request: sent to Stripe in metadata on every attempt (the same params
    # under the same idempotency key), so the webhooks the checkout causes continue its trace.
    traceparent = models.CharField(max_length=55, blank=True, default="")
    stripe_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "idempotency_key"], name="billing_order_one_per_key"),
            _status_check("billing_order_status_valid", OrderStatus),
            _currency_check("billing_order_currency_iso4217"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="billing_order_status_idx")]

    def __str__(self) -> str:
        return str(self.id)


class SubscriptionStatus(models.TextChoices):
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


class Subscription(models.Model):
    Status = SubscriptionStatus

    ENTITLING = (Status.ACTIVE, Status.TRIALING, Status.PAST_DUE)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="subscriptions", null=True, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=24, choices=Status.choices)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    trial_end = models.DateTimeField(null=True, blank=True)
    # The trial_end that `subscription.trial_will_end` was emitted for (once per trial, replays included).
    trial_end_announced = models.DateTimeField(null=True, blank=True)
    stripe_updated_at = models.DateTimeField()  # the event time of the last applied change
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [_status_check("billing_subscription_status_valid", SubscriptionStatus)]
        indexes = [models.Index(fields=["status", "created_at"], name="billing_sub_status_idx")]

    def __str__(self) -> str:
        return self.stripe_subscription_id


class PaymentStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    DISPUTED = "disputed"


class Payment(models.Model):
    Status = PaymentStatus

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="payments")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.SET_NULL, related_name="payments", null=True, blank=True
    )
    order = models.ForeignKey(Order, on_delete=models.SET_NULL, related_name="payments", null=True, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_invoice_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_charge_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices)
    refunded_amount = models.PositiveBigIntegerField(default=0)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.TextField(blank=True)
    dispute_reason = models.CharField(max_length=64, blank=True)
    stripe_updated_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)  # Stripe's creation time when known
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            _status_check("billing_payment_status_valid", PaymentStatus),
            _currency_check("billing_payment_currency_iso4217"),
            models.CheckConstraint(condition=Q(refunded_amount__lte=F("amount")), name="billing_payment_refund_cap"),
            models.CheckConstraint(
                condition=Q(stripe_payment_intent_id__isnull=False) | Q(stripe_invoice_id__isnull=False),
                name="billing_payment_has_stripe_reference",
            ),
        ]
        indexes = [
            models.Index(fields=["created_at"], name="billing_pay_created_idx"),
            models.Index(fields=["status", "created_at"], name="billing_pay_status_idx"),
            models.Index(fields=["customer", "created_at"], name="billing_pay_customer_idx"),
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def refundable_amount(self) -> int:
        return self.amount - self.refunded_amount


class RefundStatus(models.TextChoices):
    REQUESTED = "requested"  # ours, Stripe not answered yet: reserved against the payment
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class RefundReason(models.TextChoices):
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    OTHER = "other"


class Refund(models.Model):
    Status = RefundStatus
    Reason = RefundReason

    # Statuses whose amount is (or may become) money returned: they count against the payment.
    RESERVING = (Status.REQUESTED, Status.PENDING, Status.REQUIRES_ACTION, Status.SUCCEEDED)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    stripe_refund_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=32, choices=Reason.choices, default=Reason.REQUESTED_BY_CUSTOMER)
    note = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    requested_by = models.CharField(max_length=255, blank=True)  # "admin:<username>", "stripe" for outside ones
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL, not "": refunds made at Stripe have no key and must not collide
    failure_reason = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    stripe_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            _status_check("billing_refund_status_valid", RefundStatus),
            _currency_check("billing_refund_currency_iso4217"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="billing_refund_amount_positive"),
            models.CheckConstraint(condition=Q(reason__in=RefundReason.values), name="billing_refund_reason_valid"),
            models.UniqueConstraint(fields=["payment", "idempotency_key"], name="billing_refund_one_per_key"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class InvoiceStatus(models.TextChoices):
    """Stripe's invoice statuses, as Stripe names them."""

    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


class Invoice(models.Model):
    """A Stripe invoice, stored from `invoice.*` events and listed to its owner.

    `requires_action` is set by invoice.payment_action_required (3-D Secure on a renewal): the client
    must open `hosted_invoice_url` to confirm the payment; it clears when the invoice leaves `open`.
    """

    Status = InvoiceStatus

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.SET_NULL, related_name="invoices", null=True, blank=True
    )
    stripe_invoice_id = models.CharField(max_length=255, unique=True)
    number = models.CharField(max_length=64, blank=True)  # Stripe gives one when the invoice is finalized
    status = models.CharField(max_length=16, choices=Status.choices)
    amount_due = models.PositiveBigIntegerField()
    amount_paid = models.PositiveBigIntegerField(default=0)
    currency = models.CharField(max_length=3)
    hosted_invoice_url = models.URLField(max_length=2048, blank=True)
    requires_action = models.BooleanField(default=False)
    stripe_updated_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)  # Stripe's creation time
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            _status_check("billing_invoice_status_valid", InvoiceStatus),
            _currency_check("billing_invoice_currency_iso4217"),
        ]
        indexes = [
            models.Index(fields=["customer", "created_at"], name="billing_inv_customer_idx"),
            models.Index(fields=["status", "created_at"], name="billing_inv_status_idx"),
        ]

    def __str__(self) -> str:
        return self.number or self.stripe_invoice_id


class DisputeStatus(models.TextChoices):
    """Stripe's dispute statuses (docs.stripe.com/api/disputes/object#dispute_object-status)."""

    WARNING_NEEDS_RESPONSE = "warning_needs_response"
    WARNING_UNDER_REVIEW = "warning_under_review"
    WARNING_CLOSED = "warning_closed"
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"
    PREVENTED = "prevented"


class Dispute(models.Model):
    """A chargeback on a payment. While open the payment is `disputed`; a lost one records the amount the
    bank took back (`reversed_amount`); a won one returns the payment to `succeeded`."""

    Status = DisputeStatus
    CLOSED = (Status.WON, Status.LOST, Status.WARNING_CLOSED, Status.PREVENTED)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="disputes")
    stripe_dispute_id = models.CharField(max_length=255, unique=True)
    amount = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=32, choices=Status.choices)
    reversed_amount = models.PositiveBigIntegerField(default=0)
    evidence_due_by = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    stripe_updated_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)  # Stripe's creation time
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            _status_check("billing_dispute_status_valid", DisputeStatus),
            _currency_check("billing_dispute_currency_iso4217"),
            models.CheckConstraint(condition=Q(reversed_amount__lte=F("amount")), name="billing_dispute_reversal_cap"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="billing_dispute_status_idx")]

    def __str__(self) -> str:
        return self.stripe_dispute_id


class SubscriptionChangeKind(models.TextChoices):
    UPGRADE = "upgrade"  # a higher price per interval: prorated and charged now
    DOWNGRADE = "downgrade"  # a lower one: takes effect at the end of the paid period


class SubscriptionChangeStatus(models.TextChoices):
    PENDING = "pending"  # written, Stripe not answered yet
    SCHEDULED = "scheduled"  # a downgrade Stripe will apply at period end (a subscription schedule)
    APPLIED = "applied"  # in effect: the subscription is on the new price
    FAILED = "failed"


class SubscriptionChange(models.Model):
    """One plan change a client asked for: unique per (customer, Idempotency-Key), like an order. Written
    before Stripe is called; its request fingerprint tells a replay from a key reused with another body."""

    Kind = SubscriptionChangeKind
    Status = SubscriptionChangeStatus

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscription_changes")
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="changes")
    from_price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="subscription_changes")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    idempotency_key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    proration_date = models.DateTimeField(null=True, blank=True)  # upgrades: the preview's
    effective_at = models.DateTimeField(null=True, blank=True)  # now for an upgrade, the period end for a downgrade
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    stripe_schedule_id = models.CharField(max_length=255, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)  # as on orders: who is calling Stripe for it
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "idempotency_key"], name="billing_subchange_one_per_key"),
            _status_check("billing_subchange_status_valid", SubscriptionChangeStatus),
            models.CheckConstraint(
                condition=Q(kind__in=SubscriptionChangeKind.values), name="billing_subchange_kind_valid"
            ),
        ]
        indexes = [models.Index(fields=["subscription", "status"], name="billing_subchange_sub_idx")]

    def __str__(self) -> str:
        return str(self.id)
