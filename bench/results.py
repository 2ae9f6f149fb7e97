"""The result model: benchmarks register a function returning rows; a row is one figure, read against a
baseline measured in the same run (a ratio) or against an absolute limit, with its target and verdict."""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any, Literal

from bench.common import Config
from bench.wrk import Measurement


@dataclass(frozen=True)
class Target:
    """`value` (or `ratio`, value / baseline value) must be `>=` or `<=` `limit`."""

    op: Literal[">=", "<="]
    limit: float
    on: Literal["ratio", "value"] = "ratio"
    unit: str = ""

    def holds(self, value: float, ratio: float | None) -> bool:
        measured = ratio if self.on == "ratio" else value
        if measured is None or math.isnan(measured):
            return False
        return measured >= self.limit if self.op == ">=" else measured <= self.limit

    def describe(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        return f"{sign} {self.limit:.3g}x baseline" if self.on == "ratio" else f"{sign} {self.limit:.3g} {self.unit}"


def at_least(limit: float) -> Target:
    return Target(">=", limit)


def at_most(limit: float) -> Target:
    return Target("<=", limit)


@dataclass
class Row:
    benchmark: str
    figure: str
    value: float
    unit: str
    baseline: str | None = None  # what the figure is read against, e.g. "bare one-INSERT view"
    baseline_value: float | None = None
    baseline_unit: str = ""  # when it differs from `unit` (events/s against tasks/s)
    target: Target | None = None  # None: reported, no target
    note: str = ""
    measurement: dict[str, Any] | None = None  # the run behind the figure (wrk's, or an end-to-end count)
    baseline_measurement: dict[str, Any] | None = None
    error: str = ""  # the benchmark could not run: why
    ratio: float | None = field(init=False)
    passed: bool | None = field(init=False)  # None: no target

    def __post_init__(self) -> None:
        self.ratio = None
        if self.baseline_value:
            self.ratio = self.value / self.baseline_value
        self.passed = None if self.target is None else self.target.holds(self.value, self.ratio)
        if self.error:
            self.passed = False

    def as_dict(self) -> dict[str, Any]:
        data = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}
        data["target"] = None if self.target is None else {**asdict(self.target), "text": self.target.describe()}
        return data


def row(
    benchmark: str,
    figure: str,
    measured: Measurement,
    metric: str,
    unit: str,
    *,
    baseline: tuple[str, Measurement] | None = None,
    target: Target | None = None,
    note: str = "",
    value: float | None = None,
) -> Row:
    """A row from wrk measurements: `metric` is a Measurement attribute ("rps", "p99_ms", ...), unless
    `value` is given. Errors in either run, and requests that had to be unique but repeated, are noted;
    so is each pair's ratio when both sides are medians of alternating pairs (bench.wrk.measure_pairs)."""
    notes = [note] if note else []
    if baseline and value is None and measured.runs and baseline[1].runs:
        pairs = zip(measured.runs, baseline[1].runs, strict=True)
        ratios = [f"{m[metric] / b[metric]:.2f}" if m[metric] and b[metric] else "-" for m, b in pairs]
        notes.append(f"median of {len(ratios)} alternating pairs of runs; each pair's ratio {', '.join(ratios)}")
    if baseline and metric == "rps" and value is None:
        costs = [_cpu_per_request(measured), _cpu_per_request(baseline[1])]
        if None not in costs:  # what a request cost each server: a figure others' load moves less than a rate
            notes.append(f"server CPU per request {costs[0]:.2f} / {costs[1]:.2f} ms (median of the runs)")
    for run in (measured, baseline[1] if baseline else None):
        if run is not None and run.errors:
            notes.append(f"{run.name}: {run.errors} errors {run.statuses or run.error_detail}")
        if run is not None and run.unique and run.repeated:
            notes.append(f"{run.name}: requests repeated (list restarted {run.repeated}x)")
    return Row(
        benchmark,
        figure,
        getattr(measured, metric) if value is None else value,
        unit,
        baseline=baseline[0] if baseline else None,
        baseline_value=getattr(baseline[1], metric) if baseline else None,
        target=target,
        note="; ".join(notes),
        measurement=measured.as_dict(),
        baseline_measurement=baseline[1].as_dict() if baseline else None,
    )


def _cpu_per_request(measured: Measurement) -> float | None:
    """Milliseconds of the server's CPU per request: the median over the runs behind a median (median_of)."""
    runs = measured.runs or [measured.as_dict()]
    costs = [r["server_cpu"] / r["rps"] * 1000 for r in runs if r["server_cpu"] and r["rps"]]
    return median(costs) if costs else None


def quantity(value: float | None, unit: str) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if unit == "ms":
        return f"{value:.1f} ms"
    return (f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:,.0f} {unit}").rstrip()


@dataclass
class Context:
    """What a benchmark gets: the run's configuration and a way to report progress."""

    config: Config
    progress: Callable[[str], None]

    def report(self, measurement: Measurement) -> Measurement:
        self.progress(f"  {measurement.summary()}")
        return measurement


Benchmark = Callable[[Context], list[Row]]
BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    """Register a benchmark: `python -m bench NAME` runs it, `python -m bench` runs them all."""

    def register(function: Benchmark) -> Benchmark:
        BENCHMARKS[name] = function
        return function

    return register
