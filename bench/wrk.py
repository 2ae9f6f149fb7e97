"""The HTTP load generator: `wrk` (one C thread, keep-alive connections) with bench/requests.lua, which
cycles through requests generated just before the run (each can differ: a fresh Idempotency-Key, a
webhook body signed a moment ago, another user's JWT).

A Measurement carries requests/s, latency percentiles (wrk's HdrHistogram), errors, and what the run
cost: the generator's CPU (wrk's own rusage over the wall time, so a reader sees it is not the
bottleneck), the server's CPU and its workers' RSS afterwards.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

from bench.common import ROOT, VAR, Server, cpu_seconds

SCRIPT = ROOT / "bench" / "requests.lua"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def raw(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.body or self.method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


RequestFactory = Callable[[int], Request]  # n → the n-th request of a run


@dataclass
class Measurement:
    name: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: int  # HTTP status > 399 plus socket errors and timeouts
    error_detail: dict[str, int]
    statuses: dict[str, int] | None  # only when responses were inspected
    server_timing_ms: dict[str, float] | None  # p50/p99/count of the Server-Timing header's dur, if sent
    sent: int  # requests written (once: the whole list)
    unique: bool  # every request had to differ
    repeated: int  # how many times the request list was started over
    generator_cpu: float  # wrk's CPU seconds / wall seconds: the share of one core it used
    server_cpu: float | None  # the server's CPU seconds / wall seconds: cores it used
    worker_rss_mb: list[float] | None  # each gunicorn worker's RSS after the run
    wrk_output: str = ""
    # Set on the median of alternating runs (measure_pairs): every run behind it, in the order they ran.
    runs: list[dict[str, Any]] | None = None

    def summary(self) -> str:
        timing = ""
        if self.server_timing_ms:
            timing = (
                f", server time p50 {self.server_timing_ms['p50']:.1f} ms p99 {self.server_timing_ms['p99']:.1f} ms"
            )
        return (
            f"{self.name}: {self.rps:,.0f} req/s, p50 {_ms(self.p50_ms)}, p99 {_ms(self.p99_ms)}, "
            f"{self.requests} requests, {self.errors} errors{timing}, generator CPU {self.generator_cpu:.0%}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_of(runs: list[Measurement]) -> Measurement:
    """One side of alternating runs: the median of each rate and percentile over the runs, the sums of
    what they counted, the highest generator CPU (the run closest to being generator-bound), the last
    run's worker RSS; every run kept in `runs`."""

    def mid(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return median(known) if known else None

    def total(counts: list[dict[str, int] | None]) -> dict[str, int] | None:
        if all(c is None for c in counts):
            return None
        summed: dict[str, int] = {}
        for c in counts:
            for key, value in (c or {}).items():
                summed[key] = summed.get(key, 0) + value
        return summed

    timings = [r.server_timing_ms for r in runs if r.server_timing_ms]
    return Measurement(
        name=runs[0].name,
        requests=sum(r.requests for r in runs),
        seconds=sum(r.seconds for r in runs),
        rps=median(r.rps for r in runs),
        p50_ms=mid([r.p50_ms for r in runs]),
        p90_ms=mid([r.p90_ms for r in runs]),
        p99_ms=mid([r.p99_ms for r in runs]),
        max_ms=max((r.max_ms for r in runs if r.max_ms is not None), default=None),
        errors=sum(r.errors for r in runs),
        error_detail=total([r.error_detail for r in runs]) or {},
        statuses=total([r.statuses for r in runs]),
        server_timing_ms=(
            {key: median(t[key] for t in timings) for key in timings[0]} | {"count": sum(t["count"] for t in timings)}
            if timings and all("count" in t for t in timings)
            else None
        ),
        sent=sum(r.sent for r in runs),
        unique=runs[0].unique,
        repeated=sum(r.repeated for r in runs),
        generator_cpu=max(r.generator_cpu for r in runs),
        server_cpu=mid([r.server_cpu for r in runs]),
        worker_rss_mb=runs[-1].worker_rss_mb,
        runs=[r.as_dict() for r in runs],
    )


@dataclass(frozen=True)
class Side:
    """One side of a ratio: what measure() takes for a run."""

    name: str
    server: Server
    make_request: RequestFactory
    count: int  # requests generated for each run (a unique list: sized for one run's seconds)
    unique: bool = False


def measure_pairs(
    figure: Side,
    baseline: Side,
    *,
    pairs: int,
    seconds: float,
    report: Callable[[Measurement], Measurement] = lambda m: m,
    **options: Any,
) -> tuple[Measurement, Measurement]:
    """A figure and its baseline measured in `pairs` alternating pairs of runs of `seconds` each
    (Config.pair_seconds), so a swing of a shared machine falls on both sides rather than on whichever ran
    in it: the baseline runs first in even pairs, the figure first in odd ones. Returns the median of each
    side (median_of), every run in its `runs`."""
    runs: dict[str, list[Measurement]] = {"figure": [], "baseline": []}
    for n in range(pairs):
        order = ("baseline", "figure") if n % 2 == 0 else ("figure", "baseline")
        for which in order:
            side = figure if which == "figure" else baseline
            made, count = side.make_request, side.count
            run = measure(side.name, side.server, made, count=count, seconds=seconds, unique=side.unique, **options)
            runs[which].append(report(run))
    return median_of(runs["figure"]), median_of(runs["baseline"])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (Debian), or run `make bench` as root")
    return found


def wrk_version() -> str:
    completed = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    return (completed.stdout + completed.stderr).splitlines()[0].strip()


def measure(
    name: str, server: Server, make_request: RequestFactory, *, count: int, seconds: float, **options: Any
) -> Measurement:
    """Run wrk against `server` for `seconds`, cycling through `count` requests from `make_request`
    generated just now (options: see Wrk). With unique=True, size `count` to the fastest rate expected."""
    with Wrk(name, server, make_request, count=count, seconds=seconds, **options) as run:
        return run.wait()


class Wrk:
    """One wrk process: `with Wrk(...) as run:` starts it, `run.wait()` or `run.stop()` measures.

    `unique`: every request must differ (an Idempotency-Key, an event id); a row built from the run
    then notes it when the list ran out and was started over. Responses are always inspected (status
    codes counted, Server-Timing collected). `once`: send each request exactly once, then go
    quiet; `seconds` is then only a time limit, and the caller calls stop() once it has seen the effect.
    """

    def __init__(
        self,
        name: str,
        server: Server,
        make_request: RequestFactory,
        *,
        count: int,
        seconds: float,
        connections: int = 8,
        threads: int = 1,
        once: bool = False,
        unique: bool = False,
    ) -> None:
        self.name, self.server, self.unique = name, server, unique
        (VAR / "tmp").mkdir(parents=True, exist_ok=True)
        handle, self.request_file = tempfile.mkstemp(prefix="requests-", suffix=".bin", dir=VAR / "tmp")
        try:
            with os.fdopen(handle, "wb") as out:  # written now: signatures and tokens are fresh
                for n in range(count):
                    raw = make_request(n).raw(server.host)
                    out.write(b"%d\n" % len(raw) + raw)
        except BaseException:
            os.unlink(self.request_file)
            raise
        self.command = [wrk_binary(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
        self.command += ["--latency", "--timeout", "30s", "-s", str(SCRIPT), server.base_url, "--", self.request_file]
        self.command += [str(threads), "1" if once else "0"]
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by __exit__
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Wrk":
        self.server_cpu = cpu_seconds(self.server.pids())
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command, stdout=self.output, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            self.process.wait()
        self.output.close()
        os.unlink(self.request_file)

    def stop(self) -> Measurement:
        """End the run now (SIGINT: wrk prints its results) and measure it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self) -> Measurement:
        """Wait for wrk to end (its duration) and measure the run."""
        assert self.process is not None
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - self.started
        server_cpu = (cpu_seconds(self.server.pids()) - self.server_cpu) / wall
        self.output.seek(0)
        text = self.output.read().decode(errors="replace")
        if self.process.returncode != 0:
            raise RuntimeError(f"wrk failed ({self.process.returncode}) for {self.name}:\n{text}")
        return _measurement(
            self.name,
            text,
            generator_cpu=(usage.ru_utime + usage.ru_stime) / wall,
            server_cpu=server_cpu,
            worker_rss_mb=self.server.worker_rss_mb(),
            unique=self.unique,
        )


def _measurement(name: str, text: str, **costs: Any) -> Measurement:
    line = next((line for line in text.splitlines() if line.startswith("BENCH-RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result for {name}:\n{text}")
    result = json.loads(line.removeprefix("BENCH-RESULT "))
    seconds = result["duration_us"] / 1e6
    latency = {key: (None if value is None else value / 1000) for key, value in result["latency_us"].items()}
    errors = {key: int(value) for key, value in result["errors"].items()}
    return Measurement(
        name=name,
        requests=result["requests"],
        seconds=seconds,
        rps=result["requests"] / seconds if seconds else 0.0,
        p50_ms=latency["p50"],
        p90_ms=latency["p90"],
        p99_ms=latency["p99"],
        max_ms=latency["max"],
        errors=sum(errors.values()),
        error_detail=errors,
        statuses=result.get("statuses"),
        server_timing_ms=result.get("server_timing_ms"),
        sent=result["sent"],
        repeated=result["wrapped"],
        wrk_output=text,
        **costs,
    )
