"""Entitlements benchmark (`python -m bench entitlements`; issue 18, targets 1 and 2).

Against the project's gunicorn, under wrk, with the cache warm:
1. cached single checks: `GET /api/v1/entitlements/{key}` by one of USERS users (each request another
   user's JWT), beside the bare constant-JSON view (bench/baseline_app.py) under the same gunicorn settings,
   the two in alternating pairs of runs (bench.wrk.measure_pairs);
2. bulk checks: `POST /internal/v1/entitlements/check` with 1000 user ids (SPIFFE certificate chain
   verified from the XFCC header on every request): the server time at p50 and p99, from the
   `Server-Timing` header's `app` (or first) metric when the response has one, otherwise wrk's latency
   (client-side, so an upper bound of the server time), plus checks/s for the record.
A tenth of the users have a plan, a tenth more are in a family. Rate limits are lifted (no 429s; their
Redis round trips stay).
"""

import json
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import baseline_server, project_server
from bench.results import Context, Row, Target, at_least, at_most, benchmark, row
from bench.wrk import Measurement, Request, Side, measure, measure_pairs

USERS = 5000
BULK = 1000
FEATURE = "bench-hd"
CALLER = "spiffe://jia.test/ns/bench/sa/bench"


def _certificates(directory: Path) -> tuple[str, str]:
    """A trust bundle on disk for gunicorn, and the XFCC header of an allowed caller."""
    from tests.support.auth import SpiffePki  # the test suite's SPIFFE CA: the same certificates

    pki = SpiffePki("jia.test")
    return str(pki.write_bundle(directory)), pki.xfcc(pki.leaf(CALLER))


def _seed(users: list[uuid.UUID]) -> None:
    """Billing rows for the users: every 10th subscribes (family plan), the next one joins that family."""
    from billing.models import Customer, Feature, Plan, Price, Subscription
    from entitlements.models import FamilyGroup, FamilyMembership, MembershipRole

    tag = uuid.uuid4().hex[:8]
    feature, _ = Feature.objects.get_or_create(key=FEATURE, defaults={"name": "Bench HD"})
    plan = Plan.objects.create(code=f"bench-family-{tag}", name="Bench family", family_seats=2)
    plan.features.add(feature)
    price = Price.objects.create(
        plan=plan, stripe_price_id=f"price_bench_{tag}", currency="eur", unit_amount=999, interval="month"
    )
    buyers = users[::10]
    customers = Customer.objects.bulk_create([Customer(user_id=user) for user in buyers])
    now = datetime.now(UTC)
    Subscription.objects.bulk_create(
        Subscription(
            customer=customer,
            plan=plan,
            price=price,
            stripe_subscription_id=f"sub_bench_{tag}_{n}",
            status=Subscription.Status.ACTIVE,
            current_period_start=now,
            current_period_end=now + timedelta(days=30),
            stripe_updated_at=now,
        )
        for n, customer in enumerate(customers)
    )
    groups = FamilyGroup.objects.bulk_create([FamilyGroup(owner_user_id=user) for user in buyers])
    FamilyMembership.objects.bulk_create(
        [FamilyMembership(group=g, user_id=g.owner_user_id, role=MembershipRole.OWNER) for g in groups]
        + [
            FamilyMembership(group=g, user_id=users[i * 10 + 1], role=MembershipRole.MEMBER)
            for i, g in enumerate(groups)
            if i * 10 + 1 < len(users)
        ]
    )


def _server_time_row(figure: str, bulk: Measurement, percentile: str, limit: float) -> Row:
    """The bulk check's server time: Server-Timing when the server sends it, else client latency."""
    target = Target("<=", limit, on="value", unit="ms")
    if bulk.server_timing_ms:
        value = bulk.server_timing_ms[percentile]
        return row("entitlements", figure, bulk, "", "ms", target=target, note="Server-Timing", value=value)
    note = "no Server-Timing header: wrk's latency (client side, an upper bound of the server time)"
    return row("entitlements", figure, bulk, f"{percentile}_ms", "ms", target=target, note=note)


def _rss_growth_row(first: Measurement, second: Measurement) -> Row:
    """How much the workers' RSS grew over another identical run on the same server (#18.4: none)."""
    before, after = first.worker_rss_mb or [], second.worker_rss_mb or []
    growth = max((b - a for a, b in zip(before, after, strict=False)), default=0.0)
    target = Target("<=", 1.0, on="value", unit="MB")
    note = (
        f"worker RSS MB after run 2: {[round(mb, 1) for mb in before]}, after run 3: {[round(mb, 1) for mb in after]}"
    )
    return row(
        "entitlements",
        "worker RSS growth, 3rd cached-check run",
        second,
        "",
        "MB",
        target=target,
        note=note,
        value=growth,
    )


@benchmark("entitlements")
def run(ctx: Context) -> list[Row]:
    from payments_project.management.commands.mint_token import mint_token

    c = ctx.config
    bundle, xfcc = _certificates(Path(tempfile.mkdtemp(prefix="bench-entitlements-")))
    settings = {  # for the project's server only
        "SERVICE_AUTH_MODE": "xfcc",
        "SPIFFE_TRUST_DOMAIN": "jia.test",
        "SPIFFE_TRUST_BUNDLE": bundle,
        "SERVICE_ALLOWLIST_ENTITLEMENTS_READ": CALLER,
        "RATE_LIMIT_API_READ": "1000000/s",  # measure the checks, not the limiter's 429s
        "RATE_LIMIT_INTERNAL": "1000000/s",
    }
    users = [uuid.uuid4() for _ in range(USERS)]
    _seed(users)
    tokens = [f"Bearer {mint_token(user_id=user, ttl_seconds=3600)}" for user in users]
    bulk_bodies = [
        json.dumps({"user_ids": [str(users[(k * BULK + i) % USERS]) for i in range(BULK)], "feature": FEATURE}).encode()
        for k in range(USERS // BULK)
    ]
    internal = {"Content-Type": "application/json", "X-Forwarded-Client-Cert": xfcc}

    def constant(n: int) -> Request:
        return Request("GET", "/constant")

    def single(n: int) -> Request:
        return Request("GET", f"/api/v1/entitlements/{FEATURE}", {"Authorization": tokens[n % USERS]})

    def bulk(n: int) -> Request:
        return Request("POST", "/internal/v1/entitlements/check", internal, bulk_bodies[n % len(bulk_bodies)])

    runs: dict[str, Any] = {"connections": c.connections, "threads": c.wrk_threads}
    with baseline_server(c.gunicorn) as baseline, project_server(c.gunicorn, env=settings) as project:
        measure("warm-up", baseline, constant, count=1, seconds=c.warmup_seconds, **runs)
        # Warm-up: every user's entry cached (the bulk bodies cover every user), every process started.
        measure("warm-up", project, bulk, count=len(bulk_bodies), seconds=max(3, c.warmup_seconds), **runs)
        # Each gunicorn process remembers the entries it has read (TrackedReads): a full run's length of
        # single checks passes over every user in every process, so the figure is the steady state.
        measure("warm-up", project, single, count=USERS, seconds=max(c.seconds, c.warmup_seconds), **runs)
        checks, base = measure_pairs(
            Side("GET /api/v1/entitlements/{key}", project, single, count=USERS),
            Side("bare constant-JSON view", baseline, constant, count=1),
            pairs=c.pairs,
            seconds=c.pair_seconds,
            report=ctx.report,
            **runs,
        )
        # Twice more on the same server: the workers' RSS after the 2nd and the 3rd run must not differ
        # (the 1st fills each process's bounded memory of verified tokens with the users' JWTs).
        again = [
            ctx.report(
                measure(
                    f"GET /api/v1/entitlements/{{key}}, run {n}",
                    project,
                    single,
                    count=USERS,
                    seconds=c.seconds,
                    **runs,
                )
            )
            for n in (2, 3)
        ]
        bulks = ctx.report(
            measure(f"POST check, {BULK} ids", project, bulk, count=len(bulk_bodies), seconds=c.seconds, **runs)
        )

    name = "bare constant-JSON view"
    rows = [
        row(
            "entitlements",
            "cached check throughput",
            checks,
            "rps",
            "req/s",
            baseline=(name, base),
            target=at_least(0.7),
        ),
        row("entitlements", "cached check p99", checks, "p99_ms", "ms", baseline=(name, base), target=at_most(1.5)),
        _server_time_row(f"bulk {BULK} ids p50 server time", bulks, "p50", 20),
        _server_time_row(f"bulk {BULK} ids p99 server time", bulks, "p99", 50),
    ]
    rows.append(row("entitlements", "bulk user checks", bulks, "", "checks/s", value=bulks.rps * BULK))
    rows.append(_rss_growth_row(*again))
    return rows
