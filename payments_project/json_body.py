"""Reading JSON from the outside world (request bodies, Stripe's webhooks): bounded in size and depth.

Python's json recurses once per nesting level: `[[[[…]]]]` a few thousand deep raises RecursionError,
which is not a ValueError, so every `except ValueError` around `json.loads` let it through as a 500. Here
a body nested deeper than MAX_DEPTH (far more than any of our bodies or Stripe's events) is malformed,
whatever the interpreter's recursion limit; so is NaN/Infinity. The API's parser (JSONBodyParser, DRF's
default parser class) also refuses a body over API_MAX_BODY_BYTES with 413 before reading it.
"""

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from payments_project.errors import PayloadTooLarge

MAX_DEPTH = 64


class MalformedJson(ValueError):
    """Not JSON, or JSON nested deeper than MAX_DEPTH. The message is ours (it reaches clients)."""


def _refuse_constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not a JSON value")


def json_loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads for untrusted input: MalformedJson (a ValueError) for anything but plain JSON of at most
    `max_depth` nested arrays/objects. Never RecursionError."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise MalformedJson(f"The JSON is nested deeper than {max_depth} levels") from None
    except MalformedJson:
        raise
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"The body is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except ValueError:  # not UTF-8 (UnicodeDecodeError) and the like
        raise MalformedJson("The body is not valid JSON text") from None
    # Nesting needs an opening bracket per level: text with few of them cannot be too deep, and
    # counting them is far cheaper than walking a long list (the bulk check's thousand ids).
    # (In UTF-16 or -32 bytes, which json also reads, each bracket still holds its ASCII byte.)
    opening = data.count("[") + data.count("{") if isinstance(data, str) else data.count(b"[") + data.count(b"{")
    if opening > max_depth:
        _check_depth(value, max_depth)
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    """Iteratively (a recursive walk would fail the way json did)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > max_depth:
            raise MalformedJson(f"The JSON is nested deeper than {max_depth} levels")
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


class JSONBodyParser(JSONParser):
    """DRF's default parser (REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]): every API body goes through it.
    413 over API_MAX_BODY_BYTES (judged by Content-Length before reading, and by what was read);
    400 for malformed or too deeply nested JSON."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = int(settings.API_MAX_BODY_BYTES)
        request = (parser_context or {}).get("request")
        meta = getattr(request, "META", {}) if request is not None else {}
        try:
            declared = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        too_large = PayloadTooLarge(f"The body is larger than {limit // 1024} KiB")
        if declared > limit:
            raise too_large
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise too_large
        if not raw:
            raise ParseError("The body is empty; send a JSON document")
        try:
            return json_loads(raw)
        except MalformedJson as exc:
            raise ParseError(str(exc)) from None
