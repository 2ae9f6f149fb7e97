"""Logs a newcomer can follow: the request id and trace id on every line of the tasks a request caused, and
gunicorn's own lines (access and error) as the same JSON as the application's."""

import json
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tasks.models import OutboxMessage
from tests.billing.factories import PriceFactory
from tests.deploy.test_entrypoint import entrypoint, fake_bin, option  # noqa: F401 - fake_bin is a fixture
from tests.entitlements.factories import plan_with
from tests.support.otlp import OtlpReceiver, Traced
from tests.support.processes import background_process
from tests.support.proxy import free_port
from tests.support.stripe_events import delivery, stripe_event
from tests.support.worker import celery_worker, wait_until, worker_env
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def json_lines(path: Path, *, only: bool = True) -> list[dict[str, Any]]:
    """The JSON lines of a process's output; `only`: every line must be one."""
    parsed = []
    for line in filter(str.strip, path.read_text().splitlines()):
        try:
            parsed.append(json.loads(line))
        except ValueError:
            if only:
                pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def subscription_event(user_id: uuid.UUID) -> dict[str, Any]:
    now = int(time.time())
    item = {"id": "si_1", "price": {"id": "price_logs"}, "current_period_start": now, "current_period_end": now + 86400}
    subscription = {
        "id": f"sub_{uuid.uuid4().hex[:12]}",
        "object": "subscription",
        "created": now,
        "customer": {"id": f"cus_{uuid.uuid4().hex[:12]}", "object": "customer", "metadata": {"user_id": str(user_id)}},
        "status": "active",
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [item]},
        "metadata": {"user_id": str(user_id)},
    }
    return stripe_event("customer.subscription.created", subscription, created=now)


def test_every_line_of_the_tasks_a_request_caused_carries_its_request_id_and_trace_id(
    client: Client, traced: Traced, otlp: OtlpReceiver
) -> None:
    PriceFactory(stripe_price_id="price_logs", plan=plan_with(["hd"], code="logs"))
    event = subscription_event(uuid.uuid4())
    with celery_worker(["webhooks", "outbox"], env=otlp.env()) as worker:
        response = client.post("/webhooks/stripe/", **delivery(event), HTTP_X_REQUEST_ID="req-logs-0001")
        assert response.status_code == 200
        assert wait_until(lambda: WebhookEvent.objects.get(event_id=event["id"]).status == "processed", timeout=60)
        assert wait_until(lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists(), timeout=60)
        time.sleep(1)  # the last lines of the dispatch task
    node = option(list(worker.args), "-n").split("@")[0]  # type: ignore[arg-type]
    lines = json_lines(Path(f"/tmp/{node}.log"), only=False)  # Celery's banner is not a log line
    [ingestion] = [s for s in traced.spans() if s.name == "POST webhooks/stripe/"]

    task_lines = [line for line in lines if line.get("task_name") in {"webhooks.drain", "outbox.dispatch"}]
    assert {line["task_name"] for line in task_lines} == {"webhooks.drain", "outbox.dispatch"}
    assert all(line.get("request_id") == "req-logs-0001" for line in task_lines), task_lines
    assert all(line.get("trace_id") == ingestion.trace_id for line in task_lines), task_lines


def test_gunicorn_as_the_image_runs_it_logs_access_and_errors_as_json_with_the_request_id(fake_bin: Path) -> None:  # noqa: F811
    argv = entrypoint(fake_bin, "web")["argv"]
    assert argv[0] == "gunicorn"
    port = free_port()
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    argv[argv.index("--workers") + 1] = "1"
    base = f"http://127.0.0.1:{port}"
    name = f"gunicorn-logs-{port}"

    def get(path: str, **headers: str) -> int:
        request = urllib.request.Request(f"{base}{path}", headers=headers)  # noqa: S310 - our loopback server
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return int(answer.status)

    with background_process(
        [sys.executable, "-m", *argv],
        name=name,
        ready=lambda: get("/healthz") == 200,
        env={**worker_env(), "LOG_LEVEL": "INFO"},
    ):
        assert get("/api/v1/plans?cursor=secret", **{"X-Request-ID": "req-gunicorn-0001"}) == 200
        time.sleep(0.5)

    lines = json_lines(Path(f"/tmp/{name}.log"))
    errors = [line for line in lines if line.get("logger") == "gunicorn.error"]
    [access] = [
        line
        for line in lines
        if line.get("request_id") == "req-gunicorn-0001" and line.get("logger") == "gunicorn.access"
    ]
    assert any("Listening at" in line["event"] for line in errors)  # the master's own lines, too
    assert access["event"] == "http_request"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/api/v1/plans", 200)
    assert access["duration_ms"] >= 0
    assert "secret" not in json.dumps(access)  # no query string
