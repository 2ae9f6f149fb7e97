"""`python -m bench.profile_bulk [--checks N] [--cprofile]`: what one internal bulk check costs, load-independent.

In this process, on the benchmark database and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL), with the
entitlements benchmark's users and XFCC identity (bench/entitlements.py): N `POST /internal/v1/entitlements/check`
of 1000 ids through Django's WSGI handler (as gunicorn calls it, the whole middleware stack), in three states
of the cache: remembered by this process (the steady state), in Redis only (a process's first read of those
users), and cold (Redis flushed: every user from the database). For each: the CPU time of the request's
thread, the Server-Timing figure, SQL statements and Redis commands. `--cprofile` adds the top functions
(CPU time) of the remembered checks (all of them: var/bench/profile_bulk.prof).
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.common import VAR, setup_database
from bench.entitlements import BULK, CALLER, FEATURE, USERS, _certificates, _seed
from bench.profile_event import tallied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_bulk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=100, help="bulk checks to average over (default 100)")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions of the remembered checks")
    args = parser.parse_args(argv)
    bundle, xfcc = _certificates(Path(tempfile.mkdtemp(prefix="bench-profile-bulk-")))
    os.environ.update(
        {
            "SERVICE_AUTH_MODE": "xfcc",
            "SPIFFE_TRUST_DOMAIN": "jia.test",
            "SPIFFE_TRUST_BUNDLE": bundle,
            "SERVICE_ALLOWLIST_ENTITLEMENTS_READ": CALLER,
            "RATE_LIMIT_INTERNAL": "1000000/s",
        }
    )
    setup_database()
    _profile(args.checks, xfcc, cprofile=args.cprofile)


def _profile(n: int, xfcc: str, *, cprofile: bool) -> None:
    from django.core.cache import caches
    from django.core.handlers.wsgi import WSGIHandler

    from payments_project import redis_cache

    users = [uuid.uuid4() for _ in range(USERS)]
    _seed(users)
    bodies = [
        json.dumps({"user_ids": [str(users[(k * BULK + i) % USERS]) for i in range(BULK)], "feature": FEATURE}).encode()
        for k in range(USERS // BULK)
    ]
    app = WSGIHandler()

    def check(body: bytes) -> float:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/internal/v1/entitlements/check", "SCRIPT_NAME": "",
            "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)), "HTTP_X_FORWARDED_CLIENT_CERT": xfcc,
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        }  # fmt: skip
        answer: dict[str, str] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer.update(headers, status=status)

        b"".join(app(environ, start_response))
        assert answer["status"].startswith("200"), answer
        return float(answer["Server-Timing"].split("dur=")[1])

    def forget() -> None:  # this process's memory only: Redis keeps the entries
        for tracked in list(redis_cache._tracked.values()):
            tracked.close()

    for body in bodies * 2:
        check(body)  # warm: imports, connections, every user cached and remembered

    def run(what: str, prepare: Callable[[], None], profiler: cProfile.Profile | None = None) -> None:
        cpu, timings = 0.0, []
        with tallied() as tally:
            for k in range(n):
                prepare()
                own = time.thread_time()
                if profiler:
                    profiler.enable()
                timings.append(check(bodies[k % len(bodies)]))
                if profiler:
                    profiler.disable()
                cpu += time.thread_time() - own
        print(f"{what} (mean of {n}): CPU {cpu * 1000 / n:.2f} ms in the request's thread")
        print(f"  Server-Timing: p50 {statistics.median(timings):.2f} ms, max {max(timings):.2f} ms")
        counts = tally.as_dict(n)
        print(f"  sql_statements: {counts['sql_statements']}, redis_commands: {counts['redis_commands']}")
        print(f"  redis_by_command: {counts['redis_by_command']}")

    profiler = cProfile.Profile(time.thread_time) if cprofile else None
    run(f"bulk check of {BULK} ids, remembered by this process", lambda: None, profiler)
    run(f"bulk check of {BULK} ids, cached in Redis only", forget)
    run(f"bulk check of {BULK} ids, cold (Redis flushed)", lambda: caches["default"].clear())
    if profiler:
        VAR.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(VAR / "profile_bulk.prof")  # for pstats, to look further
        for order, count in (("tottime", 25), ("cumulative", 45)):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(count)
            print(f"--- top functions by {order}\n{out.getvalue()}")


if __name__ == "__main__":
    main()
