"""CHECKOUT_RETURN_URL_ORIGINS: how it is read, and what production requires of it."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from payments_project.return_urls import url_origin
from payments_project.settings.guard import production_problems
from payments_project.settings.parsing import return_url_origins
from tests.payments_project.test_settings_guard import SECURE


def test_origins_are_read_comma_separated_and_normalised() -> None:
    raw = "https://App.Jia.example/, https://shop.jia.example:443,http://localhost:8000"

    assert return_url_origins("X", raw) == (
        "https://app.jia.example",
        "https://shop.jia.example",
        "http://localhost:8000",
    )


@pytest.mark.parametrize(
    "raw",
    [
        "http://app.jia.example",  # http only for localhost
        "ftp://app.jia.example",
        "https://app.jia.example/path",
        "https://user@app.jia.example",
        "app.jia.example",
        "https://app.jia.example?x=1",
    ],
)
def test_a_malformed_origin_stops_the_process_naming_the_variable(raw: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="CHECKOUT_RETURN_URL_ORIGINS"):
        return_url_origins("CHECKOUT_RETURN_URL_ORIGINS", raw)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://a.example/x", "https://a.example"),
        ("HTTPS://A.EXAMPLE:443/x", "https://a.example"),
        ("http://[::1]:8000/x", "http://[::1]:8000"),
        ("https://a.example@b.example/", None),
        ("https://b.example\\@a.example/", None),
        ("https://a.example/\tx", None),
        ("https://a.example:99999/", None),
        ("mailto:a@a.example", None),
    ],
)
def test_url_origin(url: str, origin: str | None) -> None:
    assert url_origin(url) == origin


def test_production_requires_https_return_url_origins() -> None:
    assert production_problems({**SECURE, "CHECKOUT_RETURN_URL_ORIGINS": ()}) == [
        "CHECKOUT_RETURN_URL_ORIGINS is empty (the origins checkout and portal return URLs may point at)"
    ]
    assert production_problems({**SECURE, "CHECKOUT_RETURN_URL_ORIGINS": ("http://localhost:8000",)}) == [
        "CHECKOUT_RETURN_URL_ORIGINS must hold https:// origins only"
    ]
