"""Cursor pagination of the client lists (API.md): limit, cursor, a bare array newest first, Link: rel="next"."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from billing.models import Invoice, Payment
from tests.billing.factories import CustomerFactory, InvoiceFactory, PaymentFactory, SubscriptionFactory
from tests.support.auth import bearer

PROBLEM = "application/problem+json"
ALICE, BOB = uuid.uuid4(), uuid.uuid4()
LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def walk(api: Client, url: str, user: uuid.UUID) -> list[list[str]]:
    """Follow Link: rel="next" from `url`; the ids of each page."""
    pages: list[list[str]] = []
    while url:
        response = api.get(url, HTTP_AUTHORIZATION=bearer(user))
        assert response.status_code == 200, response.content
        assert isinstance(response.json(), list)
        pages.append([row["id"] for row in response.json()])
        link = response.headers.get("Link")
        url = LINK.match(link).group("url") if link else ""  # type: ignore[union-attr]
        assert len(pages) < 20
    return pages


@pytest.mark.django_db
def test_payments_page_newest_first_through_link_headers_even_with_equal_times(api: Client) -> None:
    alice = CustomerFactory(user_id=ALICE)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    # Two share a creation time (Stripe's second-precision times do): neither is lost nor repeated.
    times = [base + timedelta(days=n) for n in (0, 1, 1, 2, 3)]
    for when in times:
        PaymentFactory(customer=alice, created_at=when)
    PaymentFactory(customer__user_id=BOB, created_at=base + timedelta(days=9))

    pages = walk(api, "/api/v1/payments?limit=2", ALICE)

    assert [len(page) for page in pages] == [2, 2, 1]
    newest_first = sorted(
        Payment.objects.filter(customer__user_id=ALICE), key=lambda p: (p.created_at, p.id), reverse=True
    )
    assert [pid for page in pages for pid in page] == [str(p.id) for p in newest_first]


@pytest.mark.django_db
def test_the_default_page_is_50_and_the_last_page_has_no_link(api: Client) -> None:
    alice = CustomerFactory(user_id=ALICE)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(51):
        SubscriptionFactory(customer=alice, created_at=base + timedelta(minutes=n))

    first = api.get("/api/v1/subscriptions", HTTP_AUTHORIZATION=bearer(ALICE))

    assert first.status_code == 200
    assert len(first.json()) == 50
    url = LINK.match(first.headers["Link"]).group("url")  # type: ignore[union-attr]
    assert url.startswith("http://testserver/api/v1/subscriptions?cursor=")
    last = api.get(url, HTTP_AUTHORIZATION=bearer(ALICE))
    assert len(last.json()) == 1
    assert "Link" not in last.headers


@pytest.mark.django_db
def test_a_cursor_only_pages_the_callers_own_rows(api: Client) -> None:
    alice = CustomerFactory(user_id=ALICE)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(3):
        PaymentFactory(customer=alice, created_at=base + timedelta(days=n))
    first = api.get("/api/v1/payments?limit=1", HTTP_AUTHORIZATION=bearer(ALICE))
    next_url = LINK.match(first.headers["Link"]).group("url")  # type: ignore[union-attr]

    as_bob = api.get(next_url, HTTP_AUTHORIZATION=bearer(BOB))

    assert as_bob.status_code == 200
    assert as_bob.json() == []


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/payments", "/api/v1/subscriptions"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=WyJ4IiwieSJd", "cursor"),  # base64url of ["x","y"]
        ("cursor=eyJhIjoxfQ", "cursor"),  # base64url of {"a":1}
        # base64url of ["2026-01-01T00:00:00","00000000-0000-0000-0000-000000000000"]: a naive time
        ("cursor=WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIl0", "cursor"),
    ],
)
def test_a_bad_limit_or_cursor_is_a_400_problem(api: Client, path: str, query: str, field: str) -> None:
    SubscriptionFactory(customer__user_id=ALICE)

    response = api.get(f"{path}?{query}", HTTP_AUTHORIZATION=bearer(ALICE))

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.django_db
def test_limit_200_is_allowed(api: Client) -> None:
    PaymentFactory(customer__user_id=ALICE)

    response = api.get("/api/v1/payments?limit=200", HTTP_AUTHORIZATION=bearer(ALICE))

    assert response.status_code == 200
    assert len(response.json()) == 1


@pytest.mark.django_db
def test_invoices_page_newest_first_through_link_headers_and_only_the_callers_own(api: Client) -> None:
    alice = CustomerFactory(user_id=ALICE)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for when in [base + timedelta(days=n) for n in (0, 1, 1, 2, 3)]:
        InvoiceFactory(customer=alice, created_at=when)
    InvoiceFactory(customer__user_id=BOB, created_at=base + timedelta(days=9))

    pages = walk(api, "/api/v1/invoices?limit=2", ALICE)
    bad = api.get("/api/v1/invoices?limit=201", HTTP_AUTHORIZATION=bearer(ALICE))

    assert [len(page) for page in pages] == [2, 2, 1]
    newest_first = sorted(
        Invoice.objects.filter(customer__user_id=ALICE), key=lambda i: (i.created_at, i.id), reverse=True
    )
    assert [iid for page in pages for iid in page] == [str(i.id) for i in newest_first]
    assert (bad.status_code, bad["Content-Type"]) == (400, PROBLEM)
