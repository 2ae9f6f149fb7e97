"""`python -m bench [NAME ...]` (what `make bench` runs): every registered benchmark, or the ones named,
in one run; prints one table and writes the run as JSON under var/bench/<UTC timestamp>.json.

Exit status: 1 if a benchmark could not run (its error is in the table and the JSON); with --strict,
also if a figure misses its target.
"""

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, VAR, Config, setup_database
from bench.results import BENCHMARKS, Context, Row, quantity
from bench.wrk import wrk_binary, wrk_version

# The benchmark modules, in the order they run; each registers its benchmark with @benchmark(name).
MODULES = [
    "bench.webhooks",
    "bench.outbox",
    "bench.healing",
    "bench.entitlements",
    "bench.checkout",
    "bench.audit",
    "bench.scale",  # last: it writes (and empties) a million rows in each of the inbox and the outbox
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a figure misses its target")
    parser.add_argument("--output", type=Path, help="where to write the JSON (default: var/bench/<UTC time>.json)")
    args = parser.parse_args(argv)
    for module in MODULES:
        importlib.import_module(module)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)

    wrk_binary()  # fail now, not after the database set-up, if wrk is missing
    started = datetime.now(UTC)
    config = Config.from_environment()
    machine = machine_info()  # the load average before this run adds its own
    progress(f"bench: {', '.join(names)} on {machine['cores']} cores, load {machine['load_average_start']}")
    setup_database()
    machine["postgresql"] = _postgres_version()

    rows: list[Row] = []
    errors: dict[str, str] = {}
    for name in names:
        progress(f"{name}:")
        begun = time.monotonic()
        try:
            rows += BENCHMARKS[name](Context(config=config, progress=progress))
        except Exception as error:  # one broken benchmark must not lose the others' figures
            errors[name] = traceback.format_exc()
            progress(errors[name])
            rows.append(Row(name, "(did not run)", float("nan"), "", error=f"{type(error).__name__}: {error}"))
        progress(f"  ({time.monotonic() - begun:.0f} s)")

    machine["load_average_end"] = _load_average()
    run = {
        "format": 1,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "benchmarks": names,
        "machine": machine,
        "config": config.as_dict(),
        "rows": [r.as_dict() for r in rows],
        "errors": errors,
    }
    output = args.output or VAR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(run, indent=2, default=str) + "\n")

    print(table(rows))
    print(f"\n{_environment_line(machine, config)}\nwritten to {output}")
    if errors or (args.strict and any(r.passed is False for r in rows)):
        return 1
    return 0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the table -----------------------------------------------------------------------------------

COLUMNS = ["benchmark", "figure", "value", "baseline", "base value", "ratio", "target", "result"]
COLUMNS += ["gen CPU", "srv CPU", "worker RSS MB"]


def table(rows: list[Row]) -> str:
    lines = [[_cell(r, column) for column in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(COLUMNS)]
    right = {"value", "base value", "ratio"}

    def render(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, COLUMNS, strict=True)
        )

    out = [render(COLUMNS), render(["-" * w for w in widths])]
    for r, line in zip(rows, lines, strict=True):
        out.append(render(line).rstrip())
        if r.note or r.error:
            out.append(f"    {'error' if r.error else 'note'}: {r.error or r.note}")
    return "\n".join(out)


def _cell(r: Row, column: str) -> str:
    measured, base = r.measurement or {}, r.baseline_measurement or {}
    if column == "benchmark":
        return r.benchmark
    if column == "figure":
        return r.figure
    if column == "value":
        return quantity(r.value, r.unit)
    if column == "baseline":
        return r.baseline or ""
    if column == "base value":
        return quantity(r.baseline_value, r.baseline_unit or r.unit) if r.baseline else ""
    if column == "ratio":
        return "" if r.ratio is None else f"{r.ratio:.2f}x"
    if column == "target":
        return r.target.describe() if r.target else ""
    if column == "result":
        return "ERROR" if r.error else {True: "PASS", False: "FAIL", None: ""}[r.passed]
    if column == "gen CPU":
        return _pair(measured.get("generator_cpu"), base.get("generator_cpu"), lambda v: f"{v:.0%}")
    if column == "srv CPU":
        return _pair(measured.get("server_cpu"), base.get("server_cpu"), lambda v: f"{v:.2f}")
    rss = measured.get("worker_rss_mb") or []
    return ",".join(f"{mb:.0f}" for mb in rss)


def _pair(figure: float | None, baseline: float | None, show: Any) -> str:
    """The figure's run, then the baseline's: "7%/31%"."""
    parts = [show(v) if v is not None else "-" for v in (figure, baseline)]
    return parts[0] if baseline is None else "/".join(parts)


def _environment_line(machine: dict[str, Any], config: Config) -> str:
    g, w = config.gunicorn, config.worker
    commit = machine["git_commit"][:10] + (" (dirty)" if machine["git_dirty"] else "")
    return "\n".join(
        [
            f"{machine['cores']} cores, load {machine['load_average_start']} -> {machine['load_average_end']}, "
            f"commit {commit}",
            f"wrk -t{config.wrk_threads} -c{config.connections}, {config.seconds} s a run; gunicorn {g.workers} "
            f"workers x {g.threads} threads ({g.worker_class}); celery worker {w.pool} x {w.concurrency}",
            "gen CPU: wrk's CPU time / wall time (share of one core), figure/baseline; srv CPU: cores the "
            "server (or the Celery worker) used, figure/baseline; worker RSS: each gunicorn worker after the run",
        ]
    )


# --- the machine ---------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_start": _load_average(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "wrk": wrk_version(),
    }


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _git(*args: str) -> str:
    completed = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return completed.stdout.strip()


def _postgres_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return str(cursor.fetchone()[0])


if __name__ == "__main__":
    raise SystemExit(main())
