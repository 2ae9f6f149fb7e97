"""The finance dashboard: what month-end and on-call look at first, each figure linking to its list.

A fixed number of queries whatever the volume (asserted in tests/payments_project/backoffice/test_dashboard.py): one
aggregate per panel, each on an index (payments and refunds by creation time, statuses).
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.models import Payment, Price, Refund, Subscription
from billing.money import format_money
from gdpr.models import DataSubjectRequest, RequestKind, RequestStatus
from tasks.models import OutboxMessage, OutboxStatus
from webhooks.models import Discrepancy, WebhookEvent

CHART_DAYS = 30
CHART_HEIGHT = 120  # px of the tallest bar
DAY_WIDTH, BAR_WIDTH = 24, 10  # px: a day's slot holds a payments bar and a refunds bar
PAYING = (Subscription.Status.ACTIVE, Subscription.Status.PAST_DUE)  # what MRR counts (a trial pays nothing yet)
# Links to other owners' admin pages, shown once those pages exist.
OUTBOX_CHANGELIST = "admin:tasks_outboxmessage_changelist"
BEAT_CHANGELIST = "admin:django_celery_beat_periodictask_changelist"


@dataclass(frozen=True)
class Figure:
    label: str
    value: int
    url: str | None
    alert: bool = False


@dataclass
class Day:
    day: date
    payments: int = 0
    refunds: int = 0
    url: str = ""
    label: str = ""
    x: int = 0
    bars: list[tuple[str, int, int, int]] = field(default_factory=list)  # (kind, x, y, height) in px


def _url(name: str, **query: Any) -> str | None:
    try:
        base = reverse(name)
    except NoReverseMatch:
        return None
    return f"{base}?{urlencode(query)}" if query else base


def subscriptions_by_plan() -> list[dict[str, Any]]:
    """Active subscriptions and monthly recurring revenue per plan and currency (yearly prices / 12)."""
    paying = Q(status__in=PAYING)
    rows = (
        Subscription.objects.filter(status__in=Subscription.ENTITLING)
        .values("plan_id", "plan__code", "price__currency")
        .annotate(
            count=Count("id"),
            monthly=Sum("price__unit_amount", filter=paying & Q(price__interval=Price.Interval.MONTH)),
            yearly=Sum("price__unit_amount", filter=paying & Q(price__interval=Price.Interval.YEAR)),
        )
        .order_by("plan__code", "price__currency")
    )
    statuses = ",".join(Subscription.ENTITLING)
    return [
        {
            "plan": row["plan__code"],
            "currency": (row["price__currency"] or "").upper(),
            "count": row["count"],
            "mrr": format_money(round((row["monthly"] or 0) + (row["yearly"] or 0) / 12), row["price__currency"])
            if row["price__currency"]
            else "—",
            "url": _url("admin:billing_subscription_changelist", plan__id__exact=row["plan_id"], status__in=statuses),
        }
        for row in rows
    ]


def _per_day(model: type[Payment] | type[Refund], statuses: tuple[str, ...], since: datetime) -> list[dict[str, Any]]:
    manager: Any = model.objects
    return list(
        manager.filter(created_at__gte=since, status__in=statuses)
        .annotate(day=TruncDate("created_at"))
        .values("day", "currency")
        .annotate(count=Count("id"), total=Sum("amount"))
    )


def money_per_day(*, now: datetime) -> dict[str, Any]:
    """Succeeded payments and refunds (count per day for the chart; totals per currency), last 30 days."""
    first = (now - timedelta(days=CHART_DAYS - 1)).date()
    since = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    days = {first + timedelta(days=n): Day(day=first + timedelta(days=n)) for n in range(CHART_DAYS)}
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for kind, rows in (
        ("payments", _per_day(Payment, (Payment.Status.SUCCEEDED, Payment.Status.DISPUTED), since)),
        ("refunds", _per_day(Refund, (Refund.Status.SUCCEEDED, Refund.Status.PENDING), since)),
    ):
        for row in rows:
            if row["day"] in days:
                setattr(days[row["day"]], kind, getattr(days[row["day"]], kind) + row["count"])
            totals[(row["currency"], kind)] += row["total"] or 0
    tallest = max([1, *(max(d.payments, d.refunds) for d in days.values())])
    payments = reverse("admin:billing_payment_changelist")
    for n, day in enumerate(days.values()):
        stamp = day.day.isoformat()
        day.url = f"{payments}?{urlencode({'created_at__range__gte': stamp, 'created_at__range__lte': stamp})}"
        day.x = n * DAY_WIDTH
        day.label = day.day.strftime("%d %b") if n % 7 == 0 or n == CHART_DAYS - 1 else ""
        for offset, kind in enumerate(("payments", "refunds")):
            height = round(getattr(day, kind) * CHART_HEIGHT / tallest)
            day.bars.append((kind, day.x + offset * BAR_WIDTH + 1, CHART_HEIGHT - height, height))
    currencies = sorted({currency for currency, _ in totals})
    return {
        "days": list(days.values()),
        "tallest": tallest,
        "height": CHART_HEIGHT,
        "width": CHART_DAYS * DAY_WIDTH,
        "totals": [
            {
                "currency": currency.upper(),
                "payments": format_money(totals[(currency, "payments")], currency),
                "refunds": format_money(totals[(currency, "refunds")], currency),
            }
            for currency in currencies
        ],
        "payments_url": f"{payments}?{urlencode({'created_at__range__gte': first.isoformat()})}",
        "refunds_url": _url("admin:billing_refund_changelist", created_at__range__gte=first.isoformat()),
    }


def attention(*, now: datetime) -> list[Figure]:
    """What needs a person: dead webhooks, open discrepancies, GDPR requests near their deadline, the outbox."""
    gdpr_since = now - timedelta(days=settings.DASHBOARD_GDPR_WARNING_DAYS)
    open_gdpr = Q(status__in=[RequestStatus.PENDING, RequestStatus.RUNNING]) | Q(
        kind=RequestKind.ERASURE, status=RequestStatus.FAILED
    )
    outbox = OutboxMessage.objects.aggregate(
        backlog=Count("id", filter=Q(status=OutboxStatus.PENDING)),
        dead=Count("id", filter=Q(status=OutboxStatus.DEAD)),
    )
    dead_webhooks = WebhookEvent.objects.filter(status=WebhookEvent.Status.DEAD).count()
    open_discrepancies = Discrepancy.objects.filter(resolved_at__isnull=True).count()
    near_deadline = DataSubjectRequest.objects.filter(open_gdpr, created_at__lt=gdpr_since).count()
    return [
        Figure(
            "Dead webhook events",
            dead_webhooks,
            _url("admin:webhooks_webhookevent_changelist", status__exact="dead"),
            alert=dead_webhooks > 0,
        ),
        Figure(
            "Open reconciliation discrepancies",
            open_discrepancies,
            _url("admin:webhooks_discrepancy_changelist", state="open"),
            alert=open_discrepancies > 0,
        ),
        Figure(
            f"GDPR requests open over {settings.DASHBOARD_GDPR_WARNING_DAYS} days (deadline: a month)",
            near_deadline,
            _url(
                "admin:gdpr_datasubjectrequest_changelist",
                status__in="pending,running,failed",
                created_at__lt=gdpr_since.date().isoformat(),
            ),
            alert=near_deadline > 0,
        ),
        Figure(
            "Outbox backlog (waiting to publish)", outbox["backlog"], _url(OUTBOX_CHANGELIST, status__exact="pending")
        ),
        Figure(
            "Dead outbox messages",
            outbox["dead"],
            _url(OUTBOX_CHANGELIST, status__exact="dead"),
            alert=outbox["dead"] > 0,
        ),
    ]


def finance_dashboard(*, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    return {
        "subscriptions": subscriptions_by_plan(),
        "money": money_per_day(now=now),
        "attention": attention(now=now),
        "beat_url": _url(BEAT_CHANGELIST),
        "outbox_url": _url(OUTBOX_CHANGELIST),
    }
