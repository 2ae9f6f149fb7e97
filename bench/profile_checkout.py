"""`python -m bench.profile_checkout [--checkouts N] [--cprofile]`: what one checkout costs, load-independent.

In this process, on the benchmark database (BENCH_DATABASE_URL, ...), against the instant fake Stripe
(bench/fake_stripe.py): N `POST /api/v1/checkout/sessions` through the whole middleware stack (Django's test
client), each a new Idempotency-Key of a returning customer (their Stripe customer exists), as most of the
benchmark's requests are; then one first checkout of a new user. For each: SQL statements (by kind),
transactions committed, Redis commands, broker messages, Stripe calls and the mean wall time.
`--cprofile` adds the top functions (CPU time) of the N checkouts (all of them: var/bench/profile_checkout.prof).
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import ROOT, VAR, setup_database
from bench.fake_stripe import fake_stripe
from bench.profile_event import Tally, tallied


@contextmanager
def stripe_calls() -> Iterator[Counter[str]]:
    """Count the HTTP requests sent to Stripe, at requests' transport (never our own code)."""
    import requests

    calls: Counter[str] = Counter()
    original = requests.Session.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        calls[f"{request.method} {request.path_url}"] += 1
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        requests.Session.send = original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_checkout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkouts", type=int, default=200, help="checkouts to average over (default 200)")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions of the checkouts")
    args = parser.parse_args(argv)
    with fake_stripe() as (stripe_base, _):
        os.environ.update(
            {"STRIPE_API_KEY": "sk_test_bench", "STRIPE_API_BASE": stripe_base, "RATE_LIMIT_CHECKOUT": "1000000/s"}
        )
        setup_database()
        _profile(args.checkouts, cprofile=args.cprofile)


def _profile(n: int, *, cprofile: bool) -> None:
    from django.core.management import call_command
    from django.test import Client

    from bench.common import purge_queues
    from billing.models import Price
    from payments_project.management.commands.mint_token import mint_token

    call_command("import_catalog", str(ROOT / "billing" / "fixtures" / "demo_catalog.json"), verbosity=0)
    price_id = str(Price.objects.get(stripe_price_id="price_demo_family_month").id)
    body = json.dumps(
        {"price_id": price_id, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}
    )
    client = Client(REMOTE_ADDR="127.0.0.1")

    def checkout(token: str) -> None:
        response = client.post(
            "/api/v1/checkout/sessions", data=body, content_type="application/json",
            HTTP_AUTHORIZATION=token, HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        )  # fmt: skip
        assert response.status_code == 201, response.content

    def new_token() -> str:
        return f"Bearer {mint_token(user_id=uuid.uuid4(), ttl_seconds=3600)}"

    returning = new_token()
    checkout(returning)  # warm: imports, connections, and this user's Stripe customer

    def run(what: str, units: int, work: Callable[[], None], profiler: cProfile.Profile | None) -> None:
        with tallied() as tally, stripe_calls() as calls:
            started, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
            if profiler:
                profiler.enable()
            for _ in range(units):
                work()
            if profiler:
                profiler.disable()
            ms = (time.perf_counter() - started) * 1000 / units
            cpu_ms = (time.process_time() - cpu) * 1000 / units
            own_ms = (time.thread_time() - own) * 1000 / units
        _print(what, units, ms, (cpu_ms, own_ms), tally, calls)

    # CPU time, not wall: on a shared machine waiting for PostgreSQL would otherwise drown the picture.
    profiler = cProfile.Profile(time.thread_time) if cprofile else None
    run(f"one checkout of a returning customer (mean of {n})", n, lambda: checkout(returning), profiler)
    run("one first checkout of a new user", 1, lambda: checkout(new_token()), None)
    purge_queues()
    if profiler:
        VAR.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(VAR / "profile_checkout.prof")  # for pstats, to look further
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(f"--- top functions by own time\n{out.getvalue()}")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
        print(f"--- top functions by cumulative time\n{out.getvalue()}")


def _print(what: str, units: int, ms: float, cpu: tuple[float, float], tally: Tally, calls: Counter[str]) -> None:
    print(f"{what}, full middleware, test client: {ms:.2f} ms")
    print(f"  CPU: {cpu[0]:.2f} ms in this process, {cpu[1]:.2f} ms of it in the request's thread")
    for key, value in tally.as_dict(units).items():
        print(f"  {key}: {value}")
    print(f"  stripe_calls: {sum(calls.values()) / units} {dict(calls)}")


if __name__ == "__main__":
    main()
