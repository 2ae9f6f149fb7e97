"""Secrets some clients still put in URL paths never leave the process. The deprecated invitation route
`/api/v1/family/invitations/<token>/accept` carries a bearer secret in its path, and paths are what access
logs, Django's request warnings, trace attributes and Sentry events record; each of those passes what it
writes through `redact_path` (the log pipeline through the `redact_paths` processor)."""

import re
from typing import Any

_TOKEN_IN_PATH = re.compile(r"(/family/invitations/)[^/?#\s\"']+(/accept)")
REDACTED = "{token}"


def redact_path(text: str) -> str:
    """`text` with every invitation token of a path in it replaced by `{token}`."""
    return _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}\g<2>", text) if "/family/invitations/" in text else text


def redact_paths(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: every string value of a log line (the message included) through redact_path."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact_path(value)
    return event_dict


def redact_sentry_event(event: dict[str, Any], hint: Any) -> dict[str, Any]:
    """Sentry before_send: the request's URL, the transaction and breadcrumbs without invitation tokens."""
    request = event.get("request")
    if isinstance(request, dict) and isinstance(request.get("url"), str):
        request["url"] = redact_path(request["url"])
    if isinstance(event.get("transaction"), str):
        event["transaction"] = redact_path(event["transaction"])
    breadcrumbs = event.get("breadcrumbs")
    values = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else breadcrumbs
    for crumb in values or []:
        redact_sentry_breadcrumb(crumb, hint)
    return event


def redact_sentry_breadcrumb(crumb: dict[str, Any], hint: Any) -> dict[str, Any]:
    if isinstance(crumb.get("message"), str):
        crumb["message"] = redact_path(crumb["message"])
    data = crumb.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str):
                data[key] = redact_path(value)
    return crumb
