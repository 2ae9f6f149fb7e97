import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from payments_project.settings.guard import production_problems
from payments_project.settings.parsing import env_bool

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k" * 20 + "Zq8#x!pW2@vL9$mN4%bR7^tY1&cE5*hJ"

SECURE = {
    "DEBUG": False,
    "SECRET_KEY": STRONG_KEY,
    "DATABASE_URL": "postgres://payments@db:5432/payments",
    "CELERY_BROKER_URL": "amqp://payments:pw@rabbitmq:5672/payments",
    "ALLOWED_HOSTS": ["payments.jia.example"],
    "REDIS_URL": "redis://redis:6379/0",
    "JWT_ALGORITHM": "HS256",
    "JWT_SIGNING_KEY": "a-long-random-signing-key-from-the-secret-store",
    "JWT_ISSUER": "https://auth.jia.example",
    "JWT_AUDIENCE": "jia-payments",
    "STRIPE_API_KEY": "sk_live_abc",
    "STRIPE_WEBHOOK_SECRETS": ["whsec_abc"],
    "TRUSTED_PROXY_COUNT": 1,
    "CHECKOUT_RETURN_URL_ORIGINS": ("https://app.jia.example",),
    "SERVICE_SPIFFE_ID": "spiffe://jia.example/ns/payments/sa/jia-payments",
    "GDPR_PSEUDONYM_KEY": "a-long-random-pseudonym-key-from-the-secret-store",
    "GDPR_EXPORT_STORAGE": "s3",
    "GDPR_EXPORT_BUCKET": "jia-gdpr-exports",
}


def test_it_accepts_secure_production_settings() -> None:
    assert production_problems(SECURE) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"DEBUG": True}, "DEBUG"),
        ({"SECRET_KEY": ""}, "SECRET_KEY is missing"),
        ({"SECRET_KEY": "django-insecure-development-only-key-never-use-in-production-0123456789"}, "SECRET_KEY"),
        ({"SECRET_KEY": "short-key"}, "SECRET_KEY is shorter"),
        ({"DATABASE_URL": "sqlite:////tmp/db.sqlite3"}, "DATABASE_URL must not be SQLite"),
        ({"DATABASE_URL": ""}, "DATABASE_URL is missing"),
        ({"CELERY_BROKER_URL": "filesystem://"}, "CELERY_BROKER_URL"),
        ({"CELERY_BROKER_URL": "memory://"}, "CELERY_BROKER_URL"),
        ({"ALLOWED_HOSTS": ["*"]}, "ALLOWED_HOSTS"),
        ({"ALLOWED_HOSTS": []}, "ALLOWED_HOSTS"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"JWT_SIGNING_KEY": ""}, "JWT_SIGNING_KEY"),
        ({"JWT_ALGORITHM": "RS256"}, "JWT_VERIFYING_KEY or JWT_JWKS_URL"),
        ({"JWT_ISSUER": ""}, "JWT_ISSUER"),
        ({"JWT_AUDIENCE": ""}, "JWT_AUDIENCE"),
        ({"STRIPE_API_KEY": ""}, "STRIPE_API_KEY"),
        ({"STRIPE_WEBHOOK_SECRETS": []}, "STRIPE_WEBHOOK_SECRETS"),
        ({"STRIPE_WEBHOOK_SECRETS": [""]}, "STRIPE_WEBHOOK_SECRETS"),
        ({"JWT_SIGNING_KEY": "too-short"}, "JWT_SIGNING_KEY is shorter than 32 bytes"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM must be one of HS256, HS384, HS512, RS256, "),
        ({"JWT_JWKS_URL": "http://auth/jwks"}, "JWT_JWKS_URL must be an https:// URL"),
        ({"SERVICE_AUTH_MODE": "trust-me"}, "SERVICE_AUTH_MODE must be one of xfcc, none, not 'trust-me'"),
        ({"SERVICE_AUTH_MODE": "xfcc", "SPIFFE_TRUST_DOMAIN": "jia.example"}, "SPIFFE_TRUST_BUNDLE is empty"),
        ({"SERVICE_AUTH_MODE": "xfcc", "SPIFFE_TRUST_BUNDLE": "/etc/spiffe/b.crt"}, "SPIFFE_TRUST_DOMAIN is empty"),
        ({"TRUSTED_PROXY_COUNT": -1}, "TRUSTED_PROXY_COUNT must not be negative"),
        ({"WEBHOOK_INBOX_RETENTION_DAYS": 7}, "WEBHOOK_INBOX_RETENTION_DAYS must be at least 31, not 7"),
        ({"GDPR_PSEUDONYM_KEY": ""}, "GDPR_PSEUDONYM_KEY is empty"),
        ({"GDPR_EXPORT_STORAGE": "local"}, "GDPR_EXPORT_STORAGE must be s3 (pods share no disk"),
        ({"GDPR_EXPORT_BUCKET": ""}, "GDPR_EXPORT_BUCKET is empty (required when GDPR_EXPORT_STORAGE=s3)"),
        ({"ENTITLEMENTS_PAST_DUE_GRACE_DAYS": -1}, "ENTITLEMENTS_PAST_DUE_GRACE_DAYS must not be negative"),
    ],
)
def test_it_names_each_insecure_production_setting(change: dict[str, object], named: str) -> None:
    problems = production_problems({**SECURE, **change})

    assert len(problems) == 1
    assert named in problems[0]


def test_a_message_names_the_offending_value() -> None:
    problems = production_problems({**SECURE, "JWT_ALGORITHM": "RS256", "JWT_SIGNING_KEY": ""})

    assert problems == ["JWT_VERIFYING_KEY or JWT_JWKS_URL is required for RS256"]


def test_unset_settings_are_named_like_empty_ones() -> None:
    assert production_problems({}) == [
        "SECRET_KEY is missing",
        "DATABASE_URL is missing",
        "CELERY_BROKER_URL is missing",
        "ALLOWED_HOSTS is empty",
        "REDIS_URL is missing",
        "JWT_ALGORITHM must be one of HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, EdDSA, not ''",
        "JWT_ISSUER is empty",
        "JWT_AUDIENCE is empty",
        "TRUSTED_PROXY_COUNT is not set (how many proxies in front append to X-Forwarded-For; 0 for none)",
        "CHECKOUT_RETURN_URL_ORIGINS is empty (the origins checkout and portal return URLs may point at)",
        "STRIPE_API_KEY is empty",
        "STRIPE_WEBHOOK_SECRETS is empty",
        "GDPR_PSEUDONYM_KEY is empty (erased users' pseudonyms must not change when SECRET_KEY is rotated)",
        "GDPR_EXPORT_STORAGE must be s3 (pods share no disk and their root filesystem is read-only), not ''",
    ]


def test_an_asymmetric_algorithm_is_fine_with_a_jwks_url() -> None:
    settings = {**SECURE, "JWT_ALGORITHM": "RS256", "JWT_SIGNING_KEY": "", "JWT_JWKS_URL": "https://auth/jwks"}

    assert production_problems(settings) == []


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO", "JWT", "STRIPE", "DATABASE", "CELERY", "REDIS"))
    }
    return subprocess.run(command, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_manage_py_refuses_to_start_in_production_and_names_every_offending_setting() -> None:
    result = _run(
        [sys.executable, "manage.py", "check"],
        {"DJANGO_ENV": "production", "DEBUG": "true", "DATABASE_URL": "sqlite:////tmp/x.sqlite3"},
    )

    assert result.returncode != 0
    for name in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "ALLOWED_HOSTS", "REDIS_URL"):
        assert name in result.stderr
    for name in ("JWT_SIGNING_KEY", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRETS"):
        assert name in result.stderr


def test_the_celery_worker_and_beat_refuse_to_start_in_production_with_insecure_settings() -> None:
    for command in (["worker", "--pool", "solo"], ["beat"]):
        result = _run(
            [sys.executable, "-m", "celery", "-A", "payments_project", *command], {"DJANGO_ENV": "production"}
        )

        assert result.returncode != 0
        assert "Refusing to start in production" in result.stdout + result.stderr


def test_production_starts_with_secrets_from_mounted_files_and_passes_the_deploy_check(tmp_path: Path) -> None:
    secrets = {
        "SECRET_KEY": STRONG_KEY,
        "JWT_SIGNING_KEY": "signing-key-from-a-file-0123456789abcdef",
        "STRIPE_API_KEY": "sk_live_file",
        "STRIPE_WEBHOOK_SECRETS": "whsec_one,whsec_two",
        "GDPR_PSEUDONYM_KEY": "pseudonym-key-from-a-file-0123456789abcdef",
    }
    env = {"DJANGO_ENV": "production", **{k: v for k, v in SECURE.items() if isinstance(v, str) and k not in secrets}}
    env["ALLOWED_HOSTS"] = "payments.jia.example"
    env["TRUSTED_PROXY_COUNT"] = "1"
    env["CHECKOUT_RETURN_URL_ORIGINS"] = "https://app.jia.example"
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n")
        env[f"{name}_FILE"] = str(tmp_path / name)

    result = _run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    loaded = _run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings as s; print(s.STRIPE_WEBHOOK_SECRETS, s.SECRET_KEY)",
        ],
        env,
    )

    assert result.returncode == 0, result.stderr
    assert loaded.stdout.strip().splitlines()[-1] == f"['whsec_one', 'whsec_two'] {STRONG_KEY}"


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("off", False), ("No", False)])
def test_booleans_are_parsed(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("SOME_FLAG", raw)

    assert env_bool("SOME_FLAG", not expected) is expected


def test_a_boolean_that_is_neither_true_nor_false_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_FLAG", "maybe")

    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG"):
        env_bool("SOME_FLAG", False)


def test_the_past_due_grace_period_is_read_from_the_environment() -> None:
    env = {**os.environ, "DJANGO_ENV": "test", "ENTITLEMENTS_PAST_DUE_GRACE_DAYS": "3"}
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.ENTITLEMENTS_PAST_DUE_GRACE_DAYS)",
        ],
        env={**env, "DJANGO_SETTINGS_MODULE": "payments_project.settings.test"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert shown.stdout.strip() == "3"
