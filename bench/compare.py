"""`python -m bench.compare A.json B.json`: two runs of `make bench` side by side, figure by figure
(value, ratio to its baseline, verdict and worker RSS in each, and B's change against A)."""

import argparse
import json
from pathlib import Path
from typing import Any

from bench.results import quantity


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    rows_a = {(r["benchmark"], r["figure"]): r for r in a["rows"]}
    rows_b = {(r["benchmark"], r["figure"]): r for r in b["rows"]}
    keys = list(rows_a) + [key for key in rows_b if key not in rows_a]
    header = [
        "benchmark",
        "figure",
        "A",
        "B",
        "B/A",
        "A ratio",
        "B ratio",
        "A result",
        "B result",
        "A RSS MB",
        "B RSS MB",
    ]
    lines = [header]
    for key in keys:
        ra, rb = rows_a.get(key), rows_b.get(key)
        va, vb = _get(ra, "value"), _get(rb, "value")
        change = f"{vb / va:.2f}" if va and vb is not None and va == va and vb == vb else ""
        lines.append(
            [
                *key,
                quantity(va, ra["unit"]) if ra else "",
                quantity(vb, rb["unit"]) if rb else "",
                change,
                _ratio(ra),
                _ratio(rb),
                _verdict(ra),
                _verdict(rb),
                _rss(ra),
                _rss(rb),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([_describe("A", a), _describe("B", b), "", *text])


def _get(r: dict[str, Any] | None, field: str) -> Any:
    return None if r is None else r.get(field)


def _ratio(r: dict[str, Any] | None) -> str:
    return "" if r is None or r.get("ratio") is None else f"{r['ratio']:.2f}x"


def _verdict(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    return "ERROR" if r.get("error") else {True: "PASS", False: "FAIL", None: ""}[r.get("passed")]


def _rss(r: dict[str, Any] | None) -> str:
    rss = ((r or {}).get("measurement") or {}).get("worker_rss_mb") or []
    return ",".join(f"{mb:.0f}" for mb in rss)


def _describe(label: str, run: dict[str, Any]) -> str:
    m = run["machine"]
    dirty = " (dirty)" if m.get("git_dirty") else ""
    return (
        f"{label}: {run['started_at']}  commit {m['git_commit'][:10]}{dirty}  {m['cores']} cores  "
        f"load {m['load_average_start']} -> {m.get('load_average_end')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the earlier run (var/bench/<time>.json)")
    parser.add_argument("b", type=Path, help="the later run")
    args = parser.parse_args(argv)
    print(compare(json.loads(args.a.read_text()), json.loads(args.b.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
