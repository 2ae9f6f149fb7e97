"""CSV that a spreadsheet opens as text, and the one way staff download it.

The csv module quotes commas, quotes and newlines; a cell starting like a formula (=, +, -, @, tab,
carriage return) gets a leading apostrophe (OWASP's advice against CSV injection), so it is shown, never
evaluated. `csv_export_response` is every admin CSV export: it audits the export, then streams the rows.
"""

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from gdpr.audit import ActorType, AuditAction, record

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FILTERS_MAX = 500


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


class _Echo:
    """csv.writer's file: hand each written line straight back, so the export streams."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The header, then each row, as CSV lines with every cell through safe_cell."""
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([safe_cell(value) for value in row])


def csv_export_response(
    request: HttpRequest,
    *,
    name: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    count: int,
    action: AuditAction = AuditAction.ADMIN_EXPORTED,
    count_key: str = "rows",
) -> StreamingHttpResponse:
    """A staff member's CSV download `<name>-<UTC time>.csv`, streamed (rows should be an iterator over a
    server-side cursor), after its audit event: who exported how many `name` rows with which filters (the
    filters are kept beside the chain: a search may name a person)."""
    with transaction.atomic():
        record(
            action=action,
            actor_type=ActorType.STAFF,
            actor_id=str(request.user.pk),
            target_type=name.replace("-", "_"),
            metadata={count_key: count, "filters": request.GET.urlencode()[:_FILTERS_MAX]},
            request=request,
        )
    response = StreamingHttpResponse(csv_lines(header, rows), content_type="text/csv")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    return response
