"""Return URLs (checkout's success_url and cancel_url, the billing portal's return_url, ...): where Stripe
sends a payer back to. A Jia checkout link must never land anyone on someone else's page, so a return URL
must be on one of CHECKOUT_RETURN_URL_ORIGINS, compared as an origin (scheme, host, port), never as a
string prefix (`https://app.jia.example.evil.test` starts with `https://app.jia.example`).

Usage: `success_url = ReturnURLField()` in a DRF serializer, or `validate_return_url(value)` elsewhere.
"""

import functools
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from rest_framework import serializers

_DEFAULT_PORTS = {"http": 80, "https": 443}
LOCALHOSTS = ("localhost", "127.0.0.1", "::1")
_MAX_LENGTH = 2048  # the orders' and other rows' URL columns


def url_origin(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, normalised (lower case, default port dropped);
    None when it has none, or carries anything a browser could read as another host (user info,
    backslashes, whitespace or control characters)."""
    if any(ch == "\\" or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def allowed_return_url_origins() -> frozenset[str]:
    return frozenset(settings.CHECKOUT_RETURN_URL_ORIGINS)


def validate_return_url(value: str) -> str:
    """The URL itself when its origin is allowed; a 400 validation error naming the rule otherwise."""
    origin = url_origin(value)
    if origin is None or origin not in allowed_return_url_origins():
        raise serializers.ValidationError(
            "Must be an http(s) URL on one of our own origins (CHECKOUT_RETURN_URL_ORIGINS).",
            code="return_url_not_allowed",
        )
    return value


class ReturnURLField(serializers.URLField):
    """A URL field that accepts only return URLs on CHECKOUT_RETURN_URL_ORIGINS."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", _MAX_LENGTH)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        return validate_return_url(super().to_internal_value(data))


def takes_return_url(value: object) -> bool:
    """Whether ReturnURLField takes `value` as it is (a string it neither refuses nor strips), remembered per
    URL and allowed origins: a hot path's clients send the same few URLs over and over (the checkout's)."""
    return type(value) is str and len(value) <= _MAX_LENGTH and _takes(value, allowed_return_url_origins())


@functools.lru_cache(maxsize=256)
def _takes(value: str, origins: frozenset[str]) -> bool:  # `origins`: what the field reads now (the key)
    try:
        return bool(ReturnURLField().run_validation(value) == value)
    except serializers.ValidationError:
        return False
