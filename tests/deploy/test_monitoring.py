"""The alerts and the dashboard shipped with the chart: every expression parses, every alert has its runbook,
and every metric (and label value) they use is one the code exports, checked against the live registry after
exercising the code."""

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest
from django.db import transaction
from django.test import Client
from prometheus_client import REGISTRY

from gdpr.tasks import data_requests_alert_overdue_task
from payments_project.celery import app, beat_schedule_measure
from tasks.outbox import emit
from tasks.tasks import outbox_dispatch, outbox_measure
from tests.billing.factories import PriceFactory
from tests.deploy.manifests import REPO, named, of_kind, production_values, render, rendered
from tests.support.auth import bearer
from tests.support.broker import broker_url_through
from tests.support.proxy import TcpProxy
from tests.support.stripe_events import delivery, stripe_event
from tests.support.stripe_fake import StripeFake
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process, webhook_events_sweep

RUNBOOKS = REPO / "docs" / "runbooks"
RUNBOOK_BASE = production_values()["prometheusRule"]["runbookBaseUrl"]


def rules() -> list[dict[str, Any]]:
    rule = named(rendered("production"), "PrometheusRule", "jia-payments")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def panel_queries() -> list[str]:
    config = named(rendered("production"), "ConfigMap", "-dashboard")
    dashboard = json.loads(config["data"]["jia-payments.json"])
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def expressions() -> list[str]:
    return [r["expr"] for r in rules()] + panel_queries()


def selectors(node: Any) -> Iterator[promql_parser.VectorSelector]:
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from selectors(child)
    for child in getattr(node, "args", None) or []:
        yield from selectors(child)


# --- the chart -----------------------------------------------------------------------------------------


def test_alerts_and_dashboard_are_off_by_default_and_rendered_when_enabled() -> None:
    default = rendered("default")
    assert of_kind(default, "PrometheusRule") == []
    assert not [m for m in of_kind(default, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")]

    rule = named(rendered("production"), "PrometheusRule", "jia-payments")
    dashboard = named(rendered("production"), "ConfigMap", "-dashboard")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["jia-payments.json"])["uid"] == "jia-payments"


def test_the_rules_need_somewhere_to_link_their_runbooks() -> None:
    values = {**production_values(), "prometheusRule": {"enabled": True, "runbookBaseUrl": ""}}
    with pytest.raises(Exception, match="runbookBaseUrl"):
        render(values)


def test_every_alert_the_issue_names_is_there() -> None:
    alerts = {r["alert"] for r in rules()}

    assert alerts >= {
        "WebhookEventsDead",
        "WebhookProcessingLatencyBudgetBurn",
        "WebhookBacklogHigh",
        "OutboxOldestMessageTooOld",
        "GdprRequestsNearDeadline",
        "ReconciliationDiscrepanciesOpen",
        "StripeCircuitBreakerOpen",
        "HighServerErrorRate",
        "TaskFailureRateHigh",
        "PeriodicTaskLate",
        "CheckoutLatencyBudgetBurn",
        "EntitlementCheckLatencyBudgetBurn",
    }


def test_every_alert_links_its_runbook_page_and_every_page_has_its_alert() -> None:
    alerts = rules()

    for rule in alerts:
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}/{rule['alert']}.md"
        page = (RUNBOOKS / f"{rule['alert']}.md").read_text()
        assert page.startswith(f"# {rule['alert']}")
        assert [h for h in page.splitlines() if h.startswith("## ")] == [
            "## What it means",
            "## How to confirm",
            "## What to do",
        ]
        assert rule["labels"]["severity"] in {"page", "warning"}
        assert rule["annotations"]["summary"]
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == {rule["alert"] for rule in alerts}


def test_runbook_links_between_pages_resolve() -> None:
    for page in RUNBOOKS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+\.md)\)", page.read_text()):
            assert (RUNBOOKS / target).exists(), (page.name, target)


@pytest.mark.parametrize("expression", expressions())
def test_every_expression_parses(expression: str) -> None:
    promql_parser.parse(expression)


def test_the_parser_is_not_vacuous() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(payments_task_runs_total[5m])")
    assert [s.name for s in selectors(promql_parser.parse("max(a) / on (x) sum(rate(b{c='d'}[5m]))"))] == ["a", "b"]


# --- against the code ----------------------------------------------------------------------------------


def exported() -> dict[str, set[tuple[str, str]]]:
    """Every sample name in this process's registry, with the label pairs seen on it."""
    found: dict[str, set[tuple[str, str]]] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels.items())
    return found


@pytest.fixture
def exercised(client: Client, stripe_fake: StripeFake, settings: Any, transactional_db: None) -> None:
    """Run what the rules watch: requests, a checkout, an entitlement check, a webhook, the outbox, beat's
    jobs, failing tasks and an open Stripe breaker."""
    user = uuid.uuid4()
    price = PriceFactory(stripe_price_id="price_monitoring")
    auth = {"HTTP_AUTHORIZATION": bearer(user, email="m@example.com")}
    body = {"price_id": str(price.id), "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    checkout = {"content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": "monitoring-1", **auth}
    assert client.post("/api/v1/checkout/sessions", body, **checkout).status_code == 201
    assert client.get("/api/v1/entitlements/hd", **auth).status_code == 200

    customer = {"id": "cus_monitoring", "object": "customer", "metadata": {"user_id": str(user)}}
    event = stripe_event("customer.created", customer)
    assert client.post("/webhooks/stripe/", **delivery(event)).status_code == 200
    webhook_event_process(event_id=WebhookEvent.objects.get(event_id=event["id"]).id)
    webhook_events_sweep()
    forged = {"content_type": "application/json", "HTTP_STRIPE_SIGNATURE": "t=1,v1=forged"}
    assert client.post("/webhooks/stripe/", data=json.dumps(event), **forged).status_code == 400

    for task in (outbox_dispatch, outbox_measure, data_requests_alert_overdue_task):
        assert task.apply().successful()
    beat_schedule_measure()
    with TcpProxy(5672) as rabbitmq:  # a dispatch run whose publish fails
        settings.CELERY_BROKER_URL = broker_url_through(rabbitmq.port)
        rabbitmq.cut()
        with transaction.atomic():
            emit("payment.succeeded", "payment:monitoring", {})
        assert outbox_dispatch.apply().failed()

    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    stripe_fake.proxy.cut()  # Stripe down for new customers: the breaker opens, then refuses
    for _ in range(settings.STRIPE_BREAKER_FAIL_MAX + 1):
        newcomer = {**checkout, "HTTP_AUTHORIZATION": bearer(uuid.uuid4(), email="n@example.com")}
        assert client.post("/api/v1/checkout/sessions", body, **newcomer).status_code == 503


@pytest.mark.slow
def test_every_metric_and_label_value_the_rules_and_dashboard_use_is_exported(exercised: None) -> None:
    registry = exported()
    missing = []
    for expression in expressions():
        for selector in selectors(promql_parser.parse(expression)):
            if selector.name not in registry:
                missing.append(selector.name)
                continue
            for matcher in selector.matchers.matchers:
                if str(matcher.op) == "MatchOp.Equal" and (matcher.name, matcher.value) not in registry[selector.name]:
                    missing.append(f'{selector.name}{{{matcher.name}="{matcher.value}"}}')

    assert missing == []


def test_the_registry_check_is_not_vacuous() -> None:
    registry = exported()
    assert "payments_no_such_metric" not in registry
    assert "payments_outbox_backlog" in registry


def test_beat_schedule_intervals_are_exported_for_every_periodic_task() -> None:
    beat_schedule_measure()

    for entry in app.conf.beat_schedule.values():
        assert REGISTRY.get_sample_value("payments_beat_schedule_interval_seconds", {"task": entry["task"]}) > 0
    daily = {"task": "reconciliation.state_compare"}
    assert REGISTRY.get_sample_value("payments_beat_schedule_interval_seconds", daily) == 86400
