"""#13 point 9: no process of the image runs on development defaults by accident. An unset DJANGO_ENV is
production (in the entrypoint and in payments_project/env.py); with DJANGO_ENV=production, a settings
module chosen by hand (DJANGO_SETTINGS_MODULE, django-admin --settings) meets the guard too; and the guard
requires GDPR_PSEUDONYM_KEY."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.payments_project.test_configuration import _PRODUCTION_ENV

ROOT = Path(__file__).resolve().parents[2]
REFUSED = "Refusing to start in production"


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`command` in the repository with only the system's variables and `env` (no DJANGO_ENV unless given)."""
    system = {name: os.environ[name] for name in ("HOME", "LANG") if name in os.environ}
    system["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(command, cwd=ROOT, env={**system, **env}, capture_output=True, text=True, timeout=60)


def test_manage_py_without_django_env_is_production_and_refuses_without_its_secrets() -> None:
    result = _run([sys.executable, "manage.py", "check"], {})

    assert result.returncode != 0
    assert REFUSED in result.stderr
    assert "SECRET_KEY is missing" in result.stderr


@pytest.mark.parametrize("django_env", [None, ""])
def test_the_image_entrypoint_without_django_env_is_production(django_env: str | None) -> None:
    env = {} if django_env is None else {"DJANGO_ENV": django_env}

    result = _run(["/bin/sh", "scripts/docker-entrypoint.sh", "manage", "check"], env)

    assert result.returncode != 0
    assert REFUSED in result.stderr


def test_the_image_declares_production_too() -> None:
    assert "    DJANGO_ENV=production \\\n" in (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize(
    "module", ["payments_project.settings.development", "payments_project.settings.test", "bench.settings"]
)
def test_a_settings_module_set_by_hand_does_not_skip_the_guard(module: str) -> None:
    result = _run(
        [sys.executable, "manage.py", "check"],
        {"DJANGO_ENV": "production", "DJANGO_SETTINGS_MODULE": module, **_PRODUCTION_ENV},
    )

    assert result.returncode != 0
    assert REFUSED in result.stderr
    assert f"DJANGO_SETTINGS_MODULE is '{module}', not 'payments_project.settings.production'" in result.stderr


def test_django_admin_with_settings_by_hand_and_a_celery_worker_meet_the_guard_too() -> None:
    env = {"DJANGO_ENV": "production", **_PRODUCTION_ENV}
    admin = _run([sys.executable, "-m", "django", "check", "--settings", "payments_project.settings.development"], env)
    worker = _run(
        [sys.executable, "-m", "celery", "-A", "payments_project", "worker", "--pool", "solo"],
        {**env, "DJANGO_SETTINGS_MODULE": "payments_project.settings.development"},
    )

    assert admin.returncode != 0 and REFUSED in admin.stderr
    assert worker.returncode != 0 and REFUSED in worker.stdout + worker.stderr


def test_production_refuses_without_a_pseudonym_key_and_starts_with_one() -> None:
    env = {"DJANGO_ENV": "production", **_PRODUCTION_ENV}
    without = {name: value for name, value in env.items() if name != "GDPR_PSEUDONYM_KEY"}

    refused = _run([sys.executable, "manage.py", "check"], without)
    started = _run([sys.executable, "manage.py", "check"], env)

    assert refused.returncode != 0
    assert "GDPR_PSEUDONYM_KEY is empty" in refused.stderr
    assert started.returncode == 0, started.stderr


def test_make_run_keeps_exports_in_local_files() -> None:
    probe = "from django.conf import settings as s; print(s.STORAGES['gdpr_exports']['BACKEND'])"

    result = _run([sys.executable, "manage.py", "shell", "-c", probe], {"DJANGO_ENV": "development"})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "django.core.files.storage.FileSystemStorage"
