"""The environment the settings read is the one the README documents, name for name."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Names other systems and operators rely on (API.md, "Configuration names"): they stay read.
CONTRACT_NAMES = {
    "DJANGO_ENV",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "PORT",
    "LOG_LEVEL",
    "SENTRY_DSN",
    "JWT_ALGORITHM",
    "JWT_SIGNING_KEY",
    "JWT_VERIFYING_KEY",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "STRIPE_WEBHOOK_SECRETS",
    "SERVICE_AUTH_MODE",
    "SPIFFE_TRUST_BUNDLE",
    "SPIFFE_TRUST_DOMAIN",
    "TRUSTED_PROXY_COUNT",
    "SERVICE_AUTH_TRUSTED_PEERS",
    "SERVICE_SPIFFE_ID",
    "GDPR_PSEUDONYM_KEY",
    "GDPR_EXPORT_STORAGE",
    "GDPR_EXPORT_BUCKET",
    "AWS_S3_ENDPOINT_URL",
    "AWS_S3_REGION_NAME",
    "GDPR_EXPORT_URL_TTL_SECONDS",
    "CHECKOUT_RETURN_URL_ORIGINS",
}

# Loads every settings module with the environment mapping replaced by one that notes each name asked for.
_RECORD_READS = """
import importlib, json
from payments_project.settings import parsing

read = set()

class Recording(type(parsing.env.ENVIRON)):
    def __getitem__(self, key):
        read.add(key)
        return super().__getitem__(key)

parsing.env.ENVIRON = Recording()
for module in ("development", "test", "production"):
    importlib.import_module(f"payments_project.settings.{module}")
print(json.dumps(sorted(read)))
"""

# Enough for production.py's guard to let the module load.
_PRODUCTION_ENV = {
    "SECRET_KEY": "k" * 20 + "Zq8#x!pW2@vL9$mN4%bR7^tY1&cE5*hJ",
    "DATABASE_URL": "postgres://payments@db:5432/payments",
    "CELERY_BROKER_URL": "amqp://payments:pw@rabbitmq:5672/payments",
    "ALLOWED_HOSTS": "payments.jia.example",
    "REDIS_URL": "redis://redis:6379/0",
    "JWT_SIGNING_KEY": "a-long-random-signing-key-from-the-secret-store",
    "JWT_ISSUER": "https://auth.jia.example",
    "JWT_AUDIENCE": "jia-payments",
    "STRIPE_API_KEY": "sk_live_abc",
    "STRIPE_WEBHOOK_SECRETS": "whsec_abc",
    "TRUSTED_PROXY_COUNT": "1",
    "GDPR_PSEUDONYM_KEY": "a-long-random-pseudonym-key-from-the-secret-store",
    "GDPR_EXPORT_STORAGE": "s3",
    "GDPR_EXPORT_BUCKET": "jia-gdpr-exports",
    "CHECKOUT_RETURN_URL_ORIGINS": "https://app.jia.example",
}


@pytest.fixture(scope="module")
def read() -> set[str]:
    """Every environment variable the settings modules read. The run gets only the system's own variables
    and a production configuration, so nothing of this process's environment leaks into it."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    result = subprocess.run(
        [sys.executable, "-c", _RECORD_READS],
        cwd=ROOT,
        env={**env, **_PRODUCTION_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def readme_configuration_rows() -> list[str]:
    """The first column of the table under README's "## Configuration", as regular expressions
    (`RATE_LIMIT_<GROUP>` stands for every RATE_LIMIT_ name)."""
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    rows = []
    for line in table:
        for name in re.findall(r"`([A-Z][A-Z0-9_<>]*)`", line.split("|")[1]):
            rows.append(re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", name))
    return rows


def test_the_readme_table_lists_every_variable_the_settings_read_and_no_other(read: set[str]) -> None:
    rows = readme_configuration_rows()

    undocumented = {name for name in read if not any(re.fullmatch(row, name) for row in rows)}
    unread = [row for row in rows if not any(re.fullmatch(row, name) for name in read)]

    assert undocumented == set()
    assert unread == []


def test_the_names_other_systems_rely_on_are_still_read(read: set[str]) -> None:
    assert CONTRACT_NAMES - read == set()


def test_the_check_sees_the_variables_only_a_parser_reads(read: set[str]) -> None:
    assert {"RATE_LIMIT_CHECKOUT", "SERVICE_ALLOWLIST_ENTITLEMENTS_READ"} <= read
