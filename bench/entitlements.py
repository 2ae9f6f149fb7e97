"""Entitlements benchmark: `.venv/bin/python -m bench.entitlements` (needs PostgreSQL and Redis).

Against gunicorn (2 workers x 4 threads), 8 concurrent keep-alive clients, 10 s each, in one run:
1. the baseline: a bare Django view returning a constant JSON body (`GET /healthz`, same middleware);
2. cached single checks: `GET /api/v1/entitlements/{key}` by one of USERS users (JWT verified, rate
   limit counted, two Redis round trips, no database);
3. bulk checks: `POST /internal/v1/entitlements/check` with 1000 user ids (SPIFFE certificate chain
   verified from the XFCC header on every request, two Redis round trips), as requests/s and checks/s.
The cache is warmed first; a tenth of the users have a plan, a tenth more are in a family.
"""

import json
import os
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

SECONDS = 10
USERS = 5000
BULK = 1000
FEATURE = "bench-hd"
CALLER = "spiffe://jia.test/ns/bench/sa/bench"


def _certificates(directory: Path) -> str:
    """A trust bundle on disk for gunicorn, and the XFCC header of an allowed caller."""
    from tests.support.auth import SpiffePki  # the test suite's SPIFFE CA: the same certificates

    pki = SpiffePki("jia.test")
    os.environ["SPIFFE_TRUST_BUNDLE"] = str(pki.write_bundle(directory))
    return pki.xfcc(pki.leaf(CALLER))


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


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-entitlements-"))
    xfcc = _certificates(directory)
    # Read by the settings of this process and of gunicorn (bench.common copies the environment).
    os.environ.update(
        {
            "SERVICE_AUTH_MODE": "xfcc",
            "SPIFFE_TRUST_DOMAIN": "jia.test",
            "SERVICE_ALLOWLIST_ENTITLEMENTS_READ": CALLER,
            "RATE_LIMIT_API_READ": "1000000/s",  # measure the checks, not the limiter's 429s
            "RATE_LIMIT_INTERNAL": "1000000/s",
        }
    )

    from bench.common import gunicorn, load, setup_django

    setup_django()
    from payments_project.management.commands.mint_token import mint_token

    users = [uuid.uuid4() for _ in range(USERS)]
    _seed(users)
    tokens = [f"Bearer {mint_token(user_id=user, ttl_seconds=3600)}" for user in users]
    bulk_bodies = [
        json.dumps({"user_ids": [str(users[(k * BULK + i) % USERS]) for i in range(BULK)], "feature": FEATURE}).encode()
        for k in range(USERS // BULK)
    ]
    internal = {"Content-Type": "application/json", "X-Forwarded-Client-Cert": xfcc}

    def constant(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "GET", "/healthz", None, {}

    def single(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "GET", f"/api/v1/entitlements/{FEATURE}", None, {"Authorization": tokens[n % USERS]}

    def bulk(n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "POST", "/internal/v1/entitlements/check", bulk_bodies[n % len(bulk_bodies)], internal

    print(
        f"Entitlements, 8 concurrent clients, {SECONDS} s each, gunicorn 2 workers x 4 threads, "
        f"{USERS} users, cache warm, {os.cpu_count()} CPUs shared with the load generator:"
    )
    with gunicorn() as base:
        # Warm-up: every user's entry cached, every process and connection started.
        load("warm-up bulk", base, bulk, seconds=3)  # the bodies cover every user
        load("warm-up single", base, single, seconds=2)
        print(load("baseline: bare view, constant JSON", base, constant, seconds=SECONDS).line())
        print(load("GET /api/v1/entitlements/{key}", base, single, seconds=SECONDS).line())
        result = load(f"POST check, {BULK} ids", base, bulk, seconds=SECONDS)
        print(result.line())
        print(f"{'  = user checks in bulk':<34} {result.requests * BULK / result.seconds:8.0f} checks/s")


if __name__ == "__main__":
    main()
