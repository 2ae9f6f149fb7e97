"""CSV cells that a spreadsheet opens as text: the csv module quotes commas, quotes and newlines; a cell
starting like a formula (=, +, -, @, tab, carriage return) gets a leading apostrophe (OWASP's advice
against CSV injection), so it is shown, never evaluated."""

import json
from datetime import date, datetime, time
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """The text of one CSV cell: None is empty, dates are ISO 8601, lists and dicts are JSON."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime | date | time):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False, sort_keys=True)
    else:
        text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text
