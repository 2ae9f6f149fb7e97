"""Webhook benchmark: `.venv/bin/python -m bench.webhooks` (needs PostgreSQL, RabbitMQ and Redis).

1. Ingestion requests/s and p50/p99 at 8 concurrent clients against gunicorn, beside a bare Django
   view doing one INSERT, in the same run.
2. End to end: events/s from the first POST until every event is `processed` by one real worker
   (events are customer.updated, each for a new customer: a real billing write, audit row and all).
"""

import json
import os
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.common import celery_worker, gunicorn, load, setup_django

SECRET = "whsec_test_secret"  # noqa: S105 - the test settings' webhook secret
SECONDS = 10
END_TO_END_EVENTS = 1000


def signed_delivery(event: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    import stripe

    body = json.dumps(event)
    signature = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    return body.encode(), {"Content-Type": "application/json", "Stripe-Signature": signature}


def customer_event(n: int) -> dict[str, object]:
    obj = {
        "id": f"cus_bench_{uuid.uuid4().hex[:16]}",
        "object": "customer",
        "email": f"bench{n}@example.com",
        "metadata": {"user_id": str(uuid.uuid4())},
    }
    return {
        "id": f"evt_bench_{uuid.uuid4().hex}",
        "object": "event",
        "type": "customer.updated",
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def post(base: str, n: int) -> None:
    body, headers = signed_delivery(customer_event(n))
    request = urllib.request.Request(f"{base}/webhooks/stripe/", data=body, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        response.read()


def main() -> None:
    os.environ["RATE_LIMIT_WEBHOOK"] = "1000000/s"  # measure ingestion, not the limiter
    setup_django()
    from payments_project.celery import app
    from webhooks.models import WebhookEvent

    def webhook(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        body, headers = signed_delivery(customer_event(n))
        return "POST", "/webhooks/stripe/", body, headers

    def baseline(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "POST", "/bench/baseline-insert", b'{"n": %d}' % n, {"Content-Type": "application/json"}

    print(f"Ingestion, 8 concurrent clients, {SECONDS} s each, gunicorn 2 workers x 4 threads:")
    with gunicorn() as base:
        print(load("baseline: bare view, one INSERT", base, baseline, seconds=SECONDS).line())
        print(load("POST /webhooks/stripe/", base, webhook, seconds=SECONDS).line())
        # Start the end-to-end run from nothing: no rows, no queued jobs from the ingestion run.
        WebhookEvent.objects.all().delete()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("webhooks")

        print(f"\nEnd to end, {END_TO_END_EVENTS} events, POST → processed, one worker (concurrency 1):")
        with celery_worker("webhooks", concurrency=1):
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: post(base, n), range(END_TO_END_EVENTS)))
            posted_at = time.monotonic()
            while WebhookEvent.objects.filter(status="processed").count() < END_TO_END_EVENTS:
                if time.monotonic() - started > 300:
                    raise SystemExit("not all events were processed within 300 s")
                time.sleep(0.1)
            elapsed = time.monotonic() - started
    print(f"  posted in {posted_at - started:.1f} s; all processed after {elapsed:.1f} s")
    print(f"  end to end: {END_TO_END_EVENTS / elapsed:.0f} events/s")


if __name__ == "__main__":
    main()
