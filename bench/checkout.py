"""Checkout benchmark (`python -m bench checkout`; issue 18, target 3).

`POST /api/v1/checkout/sessions` requests/s under wrk against the project's gunicorn, with a fake Stripe
on loopback that answers at once (bench/fake_stripe.py, in its own process), beside the bare one-INSERT
view (bench/baseline_app.py) under the same gunicorn settings, in the same run. Every request is a new
checkout (a fresh Idempotency-Key) by one of USERS users, so a user's first checkout also creates their
Stripe customer, as in production; the rest is the full path: JWT, rate limit (lifted: no 429s), order
intent + commit, Stripe call through the gateway and breaker, outcome + audit + outbox.

Beside it, the least a checkout can cost on this machine (the bare app's POST /checkout-floor: one Redis round
trip, the order's INSERT, one Stripe POST, the outcome's UPDATE, nothing else), with the Stripe POST on
http.client and through requests (stripe-python's transport), each against the one-INSERT view in pairs of
its own: what share of target 3's ratio the physics alone leaves.
"""

import json
import uuid
from collections.abc import Callable
from typing import Any

from bench.common import ROOT, baseline_server, cpu_seconds, project_server
from bench.fake_stripe import fake_stripe
from bench.results import Context, Row, at_least, benchmark, row
from bench.wrk import Request, Side, measure, measure_pairs

USERS = 200
MAX_RATE = 2000  # requests/s the list of unique checkouts is sized for


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

    def floor(via: str) -> Callable[[int], Request]:
        def make(n: int) -> Request:
            floor_body = {"user": n % USERS, "price": "price_demo_family_month", **json.loads(body)}
            return Request(
                "POST", f"/checkout-floor{via}", {"Content-Type": "application/json"}, json.dumps(floor_body).encode()
            )

        return make

    def insert(n: int) -> Request:
        return Request("POST", "/insert", {"Content-Type": "application/json"}, b'{"n": %d}' % n)

    runs: dict[str, Any] = {"connections": c.connections, "threads": c.wrk_threads}
    with fake_stripe() as (stripe_base, stripe_pid):
        settings = {  # for the project's server only
            "STRIPE_API_KEY": "sk_test_bench",
            "STRIPE_API_BASE": stripe_base,
            "RATE_LIMIT_CHECKOUT": "1000000/s",  # measure checkout, not the limiter
        }
        floor_env = {"STRIPE_API_BASE": stripe_base}  # the bare app's checkout floor calls the same fake
        with (
            baseline_server(c.gunicorn, env=floor_env) as baseline,
            project_server(c.gunicorn, env=settings) as project,
        ):
            measure("warm-up", baseline, insert, count=1000, seconds=c.warmup_seconds, **runs)
            warm = MAX_RATE * c.warmup_seconds
            measure("warm-up", project, checkout, count=warm, seconds=c.warmup_seconds, unique=True, **runs)
            stripe_cpu = cpu_seconds([stripe_pid])
            checkouts, base = measure_pairs(
                Side("POST /api/v1/checkout/sessions", project, checkout, count=MAX_RATE * c.pair_seconds, unique=True),
                Side("bare one-INSERT view", baseline, insert, count=1000),
                pairs=c.pairs,
                seconds=c.pair_seconds,
                report=ctx.report,
                **runs,
            )
            # Over the checkout runs' time: the fake is called by no other run.
            stripe_cpu = (cpu_seconds([stripe_pid]) - stripe_cpu) / checkouts.seconds
            floors = []
            for name, via in _FLOORS:
                measure("warm-up", baseline, floor(via), count=1000, seconds=c.warmup_seconds, **runs)
                floor_side = Side(name, baseline, floor(via), count=1000)
                insert_side = Side("bare one-INSERT view", baseline, insert, count=1000)
                measured = measure_pairs(
                    floor_side, insert_side, pairs=c.pairs, seconds=c.pair_seconds, report=ctx.report, **runs
                )
                floors.append((name, *measured))
    # Near a full core, the fake (not the project) would be what limits the figure.
    note = f"fake Stripe CPU {stripe_cpu:.0%} of a core"
    name = "bare one-INSERT view"
    return [
        row(
            "checkout",
            "checkout throughput",
            checkouts,
            "rps",
            "req/s",
            baseline=(name, base),
            target=at_least(0.4),
            note=note,
        ),
        row("checkout", "checkout p99", checkouts, "p99_ms", "ms", baseline=(name, base), note=note),
        *(
            row("checkout", figure, measured, "rps", "req/s", baseline=(name, against))
            for figure, measured, against in floors
        ),
    ]


# The bare app's checkout floor, by how it sends the Stripe POST (bench/baseline_app.py).
_FLOORS = [("checkout floor, Stripe on http.client", ""), ("checkout floor, Stripe via requests", "?via=requests")]
