"""`python -m bench.profile_check [--checks N] [--cprofile]`: what one cached single check costs, load-independent.

In this process, on the benchmark database and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL), with the
entitlements benchmark's users (bench/entitlements.py): N `GET /api/v1/entitlements/{key}`, each by the next
user's JWT, through the project's WSGI application (payments_project.wsgi, as gunicorn calls it), every user
remembered by this process (the benchmark's steady state); beside it, in a child process, N `GET /constant`
of the bare baseline app (bench/baseline_app.py). For each: the CPU time of the calling thread per request
(gunicorn's own share, the same on both sides, is not in it). `--cprofile` adds the top functions (CPU
time) of the checks (var/bench/profile_check.prof).
"""

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from bench.common import ROOT, VAR, setup_database
from bench.entitlements import FEATURE, USERS, _seed


def _environ(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, **headers,
    }  # fmt: skip


def _cpu_per_call(
    app: Callable[..., Iterable[bytes]], environs: list[dict[str, Any]], profiler: cProfile.Profile | None = None
) -> float:
    """Milliseconds of this thread's CPU per call, over every environ in turn."""
    statuses = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        statuses.append(status)

    started = time.thread_time()
    if profiler:
        profiler.enable()
    for environ in environs:
        b"".join(app(dict(environ), start_response))
    if profiler:
        profiler.disable()
    spent = time.thread_time() - started
    assert all(status.startswith("200") for status in statuses), set(statuses)
    return spent * 1000 / len(environs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=20000, help="checks to average over (default 20000)")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions of the checks")
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.baseline_only:
        from bench.baseline_app import application

        constant = [_environ("/constant", {})]
        _cpu_per_call(application, constant * 1000)  # warm
        print(f"{min(_cpu_per_call(application, constant * args.checks) for _ in range(3)):.4f}")
        return
    os.environ["RATE_LIMIT_API_READ"] = "1000000/s"  # as the benchmark's server: no 429s, its round trips stay
    setup_database()
    from payments_project.management.commands.mint_token import mint_token
    from payments_project.wsgi import application

    users = [uuid.uuid4() for _ in range(USERS)]
    _seed(users)
    path = f"/api/v1/entitlements/{FEATURE}"
    checks = [
        _environ(path, {"HTTP_AUTHORIZATION": f"Bearer {mint_token(user_id=user, ttl_seconds=3600)}"}) for user in users
    ]
    for _ in range(2):
        _cpu_per_call(application, checks)  # warm: every user cached, remembered, every token verified
    environs = (checks * (args.checks // len(checks) + 1))[: args.checks]
    project = min(_cpu_per_call(application, environs) for _ in range(3))
    child = [sys.executable, "-m", "bench.profile_check", "--baseline-only", "--checks", str(args.checks)]
    baseline = float(subprocess.run(child, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    print(f"cached check: {project:.4f} ms CPU a request (best of 3 x {args.checks}), in this process")
    print(f"bare constant-JSON view: {baseline:.4f} ms CPU a request; difference {project - baseline:.4f} ms")
    if args.cprofile:
        profiler = cProfile.Profile(time.thread_time)
        _cpu_per_call(application, environs, profiler)
        VAR.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(VAR / "profile_check.prof")
        for order, count in (("tottime", 30), ("cumulative", 50)):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(count)
            print(f"--- top functions by {order}\n{out.getvalue()}")


if __name__ == "__main__":
    main()
