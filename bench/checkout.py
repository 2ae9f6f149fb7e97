"""Checkout benchmark: `.venv/bin/python -m bench.checkout` (needs PostgreSQL, RabbitMQ and Redis).

POST /api/v1/checkout/sessions requests/s and p50/p99 at 8 concurrent clients against gunicorn, with a
fake Stripe on loopback that answers at once, beside the bare one-INSERT view, in the same run.
Every request is a new checkout (a fresh Idempotency-Key) by one of USERS users, so a user's first
checkout also creates their Stripe customer, as in production; the rest is the full path: JWT,
rate limit, order intent + commit, Stripe call through the gateway and breaker, outcome + audit + outbox.
"""

import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECONDS = 10
USERS = 200


class FakeStripe(BaseHTTPRequestHandler):
    """Stripe's two answers a checkout needs, at once."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/customers":
            body = {"id": f"cus_bench{uuid.uuid4().hex[:12]}", "object": "customer"}
        elif self.path == "/v1/checkout/sessions":
            session = f"cs_bench_{uuid.uuid4().hex}"
            body = {"id": session, "object": "checkout.session", "url": f"https://checkout.stripe.test/{session}"}
        else:
            self.send_error(404)
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    stripe = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
    threading.Thread(target=stripe.serve_forever, daemon=True).start()
    # Read by the settings of this process and of gunicorn (bench.common copies the environment).
    os.environ["STRIPE_API_KEY"] = "sk_test_bench"
    os.environ["STRIPE_API_BASE"] = f"http://127.0.0.1:{stripe.server_address[1]}"
    os.environ["RATE_LIMIT_CHECKOUT"] = "1000000/s"  # measure checkout, not the limiter

    from bench.common import ROOT, gunicorn, load, setup_django

    setup_django()
    from django.core.management import call_command

    from billing.models import Price
    from payments_project.management.commands.mint_token import mint_token

    call_command("import_catalog", str(ROOT / "billing" / "fixtures" / "demo_catalog.json"), verbosity=0)
    price_id = str(Price.objects.get(stripe_price_id="price_demo_family_month").id)
    tokens = [f"Bearer {mint_token(user_id=uuid.uuid4(), ttl_seconds=3600)}" for _ in range(USERS)]
    body = json.dumps(
        {"price_id": price_id, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    ).encode()

    def checkout(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        headers = {"Authorization": tokens[n % USERS], "Idempotency-Key": uuid.uuid4().hex}
        return "POST", "/api/v1/checkout/sessions", body, {**headers, "Content-Type": "application/json"}

    def baseline(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "POST", "/bench/baseline-insert", b'{"n": %d}' % n, {"Content-Type": "application/json"}

    print(f"Checkout, 8 concurrent clients, {SECONDS} s each, gunicorn 2 workers x 4 threads, instant fake Stripe:")
    try:
        with gunicorn() as base:
            load("warm-up", base, checkout, seconds=2)
            print(load("baseline: bare view, one INSERT", base, baseline, seconds=SECONDS).line())
            print(load("POST /api/v1/checkout/sessions", base, checkout, seconds=SECONDS).line())
    finally:
        stripe.shutdown()


if __name__ == "__main__":
    main()
