"""scripts/docker-entrypoint.sh: ShellCheck-clean, and each command execs the right server with the right
arguments. gunicorn, celery and python are replaced by a fake that records how it was called; the
probes rendered by the chart run through the same fake, so a worker's node name and the node its
liveness probe pings are compared for real."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import REPO, named, pod_spec, rendered

SCRIPT = REPO / "scripts" / "docker-entrypoint.sh"
BIN = Path(sys.executable).parent
POD = "jia-payments-worker-webhooks-7d9f8b6c5d-x2x4q"

FAKE = f"""#!{sys.executable}
import json, os, sys
print(json.dumps({{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], "env": dict(os.environ)}}))
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("gunicorn", "celery", "python", "anything"):
        path = folder / name
        path.write_text(FAKE)
        path.chmod(0o755)
    return folder


def run(argv: list[str], fake_bin: Path, **env: str) -> dict[str, Any]:
    environment = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOSTNAME": POD, **env}
    result = subprocess.run(argv, env=environment, capture_output=True, text=True, check=False, timeout=10)
    assert result.returncode == 0, result.stderr
    called: dict[str, Any] = json.loads(result.stdout)
    return called


def entrypoint(fake_bin: Path, *args: str, **env: str) -> dict[str, Any]:
    return run(["/bin/sh", str(SCRIPT), *args], fake_bin, **env)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_shellcheck_finds_nothing() -> None:
    shellcheck = BIN / "shellcheck"
    assert shellcheck.exists(), f"{shellcheck} is missing: pip install -r requirements-deploy.txt"
    result = subprocess.run(
        [str(shellcheck), "--shell=sh", "--severity=style", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_is_the_default_and_runs_gunicorn_with_graceful_timeouts(fake_bin: Path) -> None:
    called = entrypoint(fake_bin, PORT="8123", GUNICORN_GRACEFUL_TIMEOUT="25")
    argv = called["argv"]
    assert argv[:2] == ["gunicorn", "payments_project.wsgi:application"]
    assert option(argv, "--bind") == "0.0.0.0:8123"
    assert option(argv, "--graceful-timeout") == "25"
    assert option(argv, "--timeout") == "30"
    assert option(argv, "--access-logfile") == "-"
    assert option(argv, "--worker-tmp-dir") == "/tmp"


def test_extra_arguments_reach_the_server(fake_bin: Path) -> None:
    argv = entrypoint(fake_bin, "web", "--log-level", "debug")["argv"]
    assert argv[-2:] == ["--log-level", "debug"]


def test_a_worker_consumes_its_queues_as_celery_at_its_pod(fake_bin: Path) -> None:
    argv = entrypoint(fake_bin, "worker", WORKER_QUEUES="default,gdpr", WORKER_CONCURRENCY="3")["argv"]
    assert argv[:4] == ["celery", "-A", "payments_project", "worker"]
    assert option(argv, "--queues") == "default,gdpr"
    assert option(argv, "--concurrency") == "3"
    assert option(argv, "--hostname") == f"celery@{POD}"
    assert option(argv, "--heartbeat-file") == "/tmp/worker-heartbeat"  # what the chart's probes check


def test_beat_keeps_its_schedule_in_the_database_and_answers_pings(fake_bin: Path) -> None:
    argv = entrypoint(fake_bin, "beat", BEAT_MAX_INTERVAL="45")["argv"]
    assert argv[:4] == ["celery", "-A", "payments_project", "beat"]
    assert option(argv, "--scheduler") == "payments_project.beat:Scheduler"
    assert "--schedule" not in argv  # no state file in the pod
    assert option(argv, "--max-interval") == "45"
    assert "--enable-remote-control" in argv
    assert option(argv, "--hostname") == f"celerybeat@{POD}"


@pytest.mark.parametrize(("component", "suffix"), [("beat", "-beat")])
def test_the_liveness_probe_pings_the_node_the_entrypoint_started(fake_bin: Path, component: str, suffix: str) -> None:
    # given the node name the entrypoint gives this process
    started = option(entrypoint(fake_bin, component)["argv"], "--hostname")
    # when the chart's liveness probe runs in the same container
    (container,) = pod_spec(named(rendered("default"), "Deployment", suffix))["containers"]
    probe = run(container["livenessProbe"]["exec"]["command"], fake_bin, PROMETHEUS_MULTIPROC_DIR="/tmp/prometheus")
    # then it pings exactly that node, and leaves the metrics directory alone
    assert probe["argv"][:5] == ["celery", "-A", "payments_project", "inspect", "ping"]
    assert option(probe["argv"], "--destination") == started
    assert "PROMETHEUS_MULTIPROC_DIR" not in probe["env"]


def test_servers_start_with_an_empty_metrics_directory(fake_bin: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    (metrics / "counter_123.db").write_text("stale")
    called = entrypoint(fake_bin, "worker", PROMETHEUS_MULTIPROC_DIR=str(metrics))
    assert called["env"]["PROMETHEUS_MULTIPROC_DIR"] == str(metrics)
    assert metrics.is_dir() and list(metrics.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["migrate"], ["python", "manage.py", "migrate", "--noinput"]),
        (["manage", "check", "--deploy"], ["python", "manage.py", "check", "--deploy"]),
    ],
)
def test_one_off_commands_leave_the_metrics_directory_alone(
    fake_bin: Path, tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    (metrics / "counter_123.db").write_text("live")
    called = entrypoint(fake_bin, *args, PROMETHEUS_MULTIPROC_DIR=str(metrics))
    assert called["argv"] == expected
    assert "PROMETHEUS_MULTIPROC_DIR" not in called["env"]
    assert [p.name for p in metrics.iterdir()] == ["counter_123.db"]


def test_any_other_command_is_run_as_given(fake_bin: Path) -> None:
    assert entrypoint(fake_bin, "anything", "--flag")["argv"] == ["anything", "--flag"]


def test_the_script_is_executable() -> None:
    # The image runs it through /bin/sh, so this is for people running it by hand.
    assert os.access(SCRIPT, os.X_OK)
