"""Cursor pagination of the client lists (API.md): `?limit=` (default 50, at most 200) and `?cursor=`,
newest first, the body stays a bare JSON array, and the next page is in `Link: <…>; rel="next"`.

Keyset pagination on (created_at, pk), both descending: a page costs one indexed range scan however deep
it is, and rows inserted while a client pages never shift or repeat what it sees. The cursor is opaque to
clients (base64url of the last row's position); a malformed one, or a bad limit, is a 400 problem.

Use it from a view:

    paginator = NewestFirstPagination()
    page = paginator.paginate_queryset(queryset, request)
    return paginator.get_paginated_response(OutputSerializer(page, many=True).data)

and document the parameters with `@extend_schema(parameters=PAGINATION_PARAMETERS, ...)`.
"""

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import Model, Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from payments_project.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

PAGINATION_PARAMETERS = [
    OpenApiParameter(
        "limit", OpenApiTypes.INT, OpenApiParameter.QUERY, description=f"1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}"
    ),
    OpenApiParameter(
        "cursor",
        OpenApiTypes.STR,
        OpenApiParameter.QUERY,
        description='Opaque: the value from the previous page\'s `Link: <…>; rel="next"` header',
    ),
]


def _bad(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"field": field, "message": message}])


class NewestFirstPagination(BasePagination):
    """Newest first by `time_field`, ties broken by the primary key (uuid7 here: time-ordered too)."""

    time_field = "created_at"
    limit_query_param = "limit"
    cursor_query_param = "cursor"

    def __init__(self) -> None:
        self.next_url: str | None = None

    # --- parsing -------------------------------------------------------------------------------------

    def _limit(self, request: Request) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return DEFAULT_LIMIT
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise _bad(self.limit_query_param, f"limit must be an integer from 1 to {MAX_LIMIT}")
        return int(raw)

    def _position(self, request: Request) -> tuple[datetime, str] | None:
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        try:
            decoded = json.loads(base64.urlsafe_b64decode(raw.encode("ascii") + b"=" * (-len(raw) % 4)))
            when, key = decoded
            moment = datetime.fromisoformat(when)
            if moment.tzinfo is None:
                raise ValueError("naive time")
            return moment, str(uuid.UUID(str(key)))
        except (ValueError, TypeError, UnicodeError, binascii.Error):
            raise _bad(self.cursor_query_param, "cursor is not one this API returned") from None

    @staticmethod
    def _encode(moment: datetime, key: Any) -> str:
        raw = json.dumps([moment.isoformat(), str(key)], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    # --- DRF's pagination interface ------------------------------------------------------------------

    def paginate_queryset(
        self, queryset: QuerySet[Any, Any] | Sequence[Any], request: Request, view: Any = None
    ) -> list[Any]:
        if not isinstance(queryset, QuerySet):
            raise TypeError("NewestFirstPagination pages a QuerySet")
        limit = self._limit(request)
        position = self._position(request)  # both validated before any query
        if position is not None:
            moment, key = position
            queryset = queryset.filter(
                Q(**{f"{self.time_field}__lt": moment}) | Q(**{self.time_field: moment, "pk__lt": key})
            )
        rows: list[Model] = list(queryset.order_by(f"-{self.time_field}", "-pk")[: limit + 1])
        page, more = rows[:limit], len(rows) > limit
        if more:
            last = page[-1]
            cursor = self._encode(getattr(last, self.time_field), last.pk)
            self.next_url = replace_query_param(request.build_absolute_uri(), self.cursor_query_param, cursor)
        return page

    def get_paginated_response(self, data: Any) -> Response:
        headers = {"Link": f'<{self.next_url}>; rel="next"'} if self.next_url else None
        return Response(data, headers=headers)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return schema  # the body stays the bare array
