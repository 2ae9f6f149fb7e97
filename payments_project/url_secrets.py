"""Secrets some clients still put in URL paths never leave the process. The deprecated invitation route
`/api/v1/family/invitations/<token>/accept` carries a bearer secret in its path, and paths are what access
logs, Django's request warnings, trace attributes and Sentry events record; each of those passes what it
writes through `redact_path` (the log pipeline through the `redact_paths` processor, Sentry through
payments_project.logging's scrubber)."""

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
