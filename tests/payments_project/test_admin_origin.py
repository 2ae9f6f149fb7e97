"""ADMIN_ORIGIN: the host passkeys are bound to; https in production, derived from ALLOWED_HOSTS when unset."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from payments_project.settings.guard import production_problems
from payments_project.settings.parsing import admin_host


def test_production_refuses_an_admin_origin_that_is_not_https() -> None:
    problems = production_problems({"ADMIN_ORIGIN": "http://admin.jia.example"})

    assert any(problem.startswith("ADMIN_ORIGIN must be an https:// origin") for problem in problems)
    assert not any("ADMIN_ORIGIN" in p for p in production_problems({"ADMIN_ORIGIN": "https://admin.jia.example"}))


@pytest.mark.parametrize(
    ("origin", "host"), [("https://admin.jia.example", "admin.jia.example"), ("http://localhost:8000", "localhost")]
)
def test_the_passkey_host_is_the_origins_host(origin: str, host: str) -> None:
    assert admin_host(origin) == host


@pytest.mark.parametrize("origin", ["admin.jia.example", "ftp://x", ""])
def test_an_origin_that_is_not_one_is_a_configuration_error(origin: str) -> None:
    with pytest.raises(ImproperlyConfigured):
        admin_host(origin)
