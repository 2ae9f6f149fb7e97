"""Finance's admin: find, refund, export. finance may move money; support may only look."""

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.models import Payment
from tests.billing.factories import (
    CustomerFactory,
    DisputeFactory,
    InvoiceFactory,
    OrderFactory,
    PaymentFactory,
    RefundFactory,
    SubscriptionFactory,
)
from tests.support.auth import staff_client

CHANGELIST = "/admin/billing/payment/"


@pytest.fixture
def finance() -> Client:
    return staff_client("anna", "finance")


@pytest.fixture
def support() -> Client:
    return staff_client("sam", "support")


# --- finding things ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("term", ["needle@example.com", "needle@", "cus_needle123", "USER"])
def test_customers_are_found_by_email_user_id_and_stripe_id(support: Client, term: str) -> None:
    target = CustomerFactory(email="needle@example.com", stripe_customer_id="cus_needle123")
    CustomerFactory(email="hay@example.com")
    term = str(target.user_id) if term == "USER" else term

    response = support.get("/admin/billing/customer/", {"q": term})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [target]


@pytest.mark.django_db
def test_payments_are_found_by_stripe_ids_and_filtered_by_status_and_date(finance: Client) -> None:
    target = PaymentFactory(stripe_payment_intent_id="pi_needle", created_at=datetime(2026, 3, 5, tzinfo=UTC))
    PaymentFactory(status=Payment.Status.FAILED, created_at=datetime(2026, 3, 5, tzinfo=UTC))

    assert list(finance.get(CHANGELIST, {"q": "pi_needle"}).context["cl"].result_list) == [target]
    by_status = finance.get(CHANGELIST, {"status__exact": "failed"}).context["cl"].result_list
    assert [p.status for p in by_status] == ["failed"]
    by_date = finance.get(
        CHANGELIST, {"created_at__gte": "2026-03-01 00:00:00+00:00", "created_at__lt": "2026-04-01 00:00:00+00:00"}
    )
    assert by_date.context["cl"].result_count == 2


@pytest.mark.django_db
def test_the_payment_list_costs_the_same_queries_for_3_or_60_payments(finance: Client) -> None:
    def page_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = finance.get(CHANGELIST)
        assert response.status_code == 200
        return len(queries.captured_queries)

    for _ in range(3):
        RefundFactory(payment=PaymentFactory())
    few = page_queries()
    for _ in range(57):
        RefundFactory(payment=PaymentFactory())

    assert page_queries() == few


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "factory"),
    [
        ("/admin/billing/order/", OrderFactory),
        ("/admin/billing/subscription/", SubscriptionFactory),
        ("/admin/billing/customer/", CustomerFactory),
        ("/admin/billing/invoice/", InvoiceFactory),
        ("/admin/billing/dispute/", DisputeFactory),
    ],
)
def test_the_other_lists_cost_the_same_queries_for_3_or_40_rows(finance: Client, path: str, factory: Any) -> None:
    factory.create_batch(3)
    with CaptureQueriesContext(connection) as few:
        finance.get(path)
    factory.create_batch(37)

    with CaptureQueriesContext(connection) as many:
        assert finance.get(path).status_code == 200

    assert len(many.captured_queries) == len(few.captured_queries)


@pytest.mark.django_db
def test_a_payment_shows_its_amounts_with_currency_and_its_refunds_read_only(finance: Client) -> None:
    payment = PaymentFactory(amount=5000, refunded_amount=1250, currency="eur")
    RefundFactory(payment=payment, amount=1250)
    PaymentFactory(amount=500, currency="jpy")

    listing = finance.get(CHANGELIST).content.decode()
    page = finance.get(f"{CHANGELIST}{payment.id}/change/").content.decode()

    assert "50.00 EUR" in listing and "12.50 EUR" in listing and "500 JPY" in listing
    assert "12.50 EUR" in page  # the refund inline
    assert 'name="stripe_payment_intent_id"' not in page  # provider fields are not editable
    assert finance.post(f"{CHANGELIST}{payment.id}/change/", {"status": "failed"}).status_code == 403


@pytest.mark.django_db
def test_staff_without_a_billing_role_see_no_payments() -> None:
    nobody = staff_client("ned", None)

    assert nobody.get(CHANGELIST).status_code == 403


# --- CSV export ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_finance_exports_the_selected_payments_as_csv(finance: Client) -> None:
    customer = CustomerFactory(email="=HYPERLINK(evil)")
    first = PaymentFactory(
        customer=customer, amount=1299, refunded_amount=299, created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    second = PaymentFactory(amount=500, currency="jpy", created_at=datetime(2026, 1, 2, tzinfo=UTC))

    response = finance.post(CHANGELIST, {"action": "export_csv", "_selected_action": [str(first.id), str(second.id)]})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"].startswith('attachment; filename="payments-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["payment_id"], r["amount"], r["refunded_amount"], r["currency"]) for r in rows] == [
        (str(first.id), "12.99", "2.99", "EUR"),
        (str(second.id), "500", "0", "JPY"),
    ]
    assert rows[0]["email"] == "'=HYPERLINK(evil)"  # a spreadsheet will not run it


@pytest.mark.django_db
def test_support_cannot_export(support: Client) -> None:
    payment = PaymentFactory()

    response = support.post(CHANGELIST, {"action": "export_csv", "_selected_action": [str(payment.id)]})

    assert response.get("Content-Type") != "text/csv"


@pytest.mark.django_db
def test_finance_sees_disputes_with_what_a_lost_one_reversed_and_support_cannot_export_them(
    finance: Client, support: Client
) -> None:
    lost = DisputeFactory(status="lost", amount=5000, reversed_amount=5000, stripe_dispute_id="dp_lost_1")
    DisputeFactory(status="won", stripe_dispute_id="dp_won_1")

    page = finance.get("/admin/billing/dispute/", {"status__exact": "lost"})
    exported = finance.post("/admin/billing/dispute/", {"action": "export_csv", "_selected_action": [str(lost.id)]})
    refused = support.post("/admin/billing/dispute/", {"action": "export_csv", "_selected_action": [str(lost.id)]})

    assert page.status_code == 200
    assert "dp_lost_1" in page.content.decode() and "dp_won_1" not in page.content.decode()
    [row] = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))  # type: ignore[attr-defined]
    assert (row["stripe_dispute_id"], row["status"], row["reversed_amount"]) == ("dp_lost_1", "lost", "50.00")
    assert refused.status_code == 403
    assert finance.get(f"/admin/billing/dispute/{lost.id}/change/").status_code == 200
    payment_page = finance.get(f"{CHANGELIST}{lost.payment_id}/change/").content.decode()
    assert "dp_lost_1" in payment_page and "50.00 EUR" in payment_page  # the dispute inline
