"""Checkout benchmark (`python -m bench checkout`; issue 18, target 3).

`POST /api/v1/checkout/sessions` requests/s under wrk against the project's gunicorn, with a fake Stripe
on loopback that answers at once, beside the bare one-INSERT view (bench/baseline_app.py) under the same
gunicorn settings, in the same run. Every request is a new checkout (a fresh Idempotency-Key) by one of
USERS users, so a user's first checkout also creates their Stripe customer, as in production; the rest is
the full path: JWT, rate limit (lifted: no 429s), order intent + commit, Stripe call through the gateway
and breaker, outcome + audit + outbox.
"""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import ROOT, baseline_server, project_server
from bench.results import Context, Row, at_least, benchmark, row
from bench.wrk import Request, measure

USERS = 200
MAX_RATE = 2000  # requests/s the list of unique checkouts is sized for


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


@benchmark("checkout")
def run(ctx: Context) -> list[Row]:
    from django.core.management import call_command

    from billing.models import Price
    from payments_project.management.commands.mint_token import mint_token

    c = ctx.config
    call_command("import_catalog", str(ROOT / "billing" / "fixtures" / "demo_catalog.json"), verbosity=0)
    price_id = str(Price.objects.get(stripe_price_id="price_demo_family_month").id)
    tokens = [f"Bearer {mint_token(user_id=uuid.uuid4(), ttl_seconds=3600)}" for _ in range(USERS)]
    body = json.dumps(
        {"price_id": price_id, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    ).encode()

    def checkout(n: int) -> Request:
        headers = {"Authorization": tokens[n % USERS], "Idempotency-Key": uuid.uuid4().hex}
        return Request("POST", "/api/v1/checkout/sessions", {**headers, "Content-Type": "application/json"}, body)

    def insert(n: int) -> Request:
        return Request("POST", "/insert", {"Content-Type": "application/json"}, b'{"n": %d}' % n)

    stripe = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
    threading.Thread(target=stripe.serve_forever, daemon=True).start()
    settings = {  # for the project's server only
        "STRIPE_API_KEY": "sk_test_bench",
        "STRIPE_API_BASE": f"http://127.0.0.1:{stripe.server_address[1]}",
        "RATE_LIMIT_CHECKOUT": "1000000/s",  # measure checkout, not the limiter
    }
    runs: dict[str, Any] = {"connections": c.connections, "threads": c.wrk_threads}
    try:
        with baseline_server(c.gunicorn) as baseline, project_server(c.gunicorn, env=settings) as project:
            measure("warm-up", baseline, insert, count=1000, seconds=c.warmup_seconds, **runs)
            base = ctx.report(measure("bare one-INSERT view", baseline, insert, count=1000, seconds=c.seconds, **runs))
            runs["unique"] = True
            measure("warm-up", project, checkout, count=MAX_RATE * c.warmup_seconds, seconds=c.warmup_seconds, **runs)
            checkouts = ctx.report(
                measure(
                    "POST /api/v1/checkout/sessions",
                    project,
                    checkout,
                    count=MAX_RATE * c.seconds,
                    seconds=c.seconds,
                    **runs,
                )
            )
    finally:
        stripe.shutdown()
        stripe.server_close()
    name = "bare one-INSERT view"
    return [
        row("checkout", "checkout throughput", checkouts, "rps", "req/s", baseline=(name, base), target=at_least(0.4)),
        row("checkout", "checkout p99", checkouts, "p99_ms", "ms", baseline=(name, base)),
    ]
