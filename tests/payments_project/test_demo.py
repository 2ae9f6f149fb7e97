"""`make demo` (scripts/demo.py): it walks every step, exits 0 by itself and leaves nothing running."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = [
    "== 1. Plans listed",
    "== 2. A subscription bought",
    "== 3. The entitlement granted",
    "== 4. A plan change previewed and applied",
    "== 5. A family member invited and entitled",
    "== 6. Cancellation, and access ending",
    "Demo finished",
]


def _demo_processes() -> list[int]:
    """Processes whose environment names the demo's database: what the demo started, if any is left."""
    marker = str(ROOT / "var" / "demo" / "db.sqlite3").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.timeout(300)
def test_make_demo_walks_a_subscriber_through_and_ends_by_itself() -> None:
    assert _demo_processes() == []
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    positions = [done.stdout.find(step) for step in STEPS]
    assert -1 not in positions, done.stdout
    assert positions == sorted(positions)
    for request in ("POST /api/v1/checkout/sessions", "POST /webhooks/stripe/ checkout.session.completed (signed)"):
        assert request in done.stdout
    assert '"entitled": true' in done.stdout
    assert '"features": []' in done.stdout  # access ended
    assert _demo_processes() == []
