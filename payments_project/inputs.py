"""Request bodies are read strictly: a field the endpoint does not know is a 400 naming it, never ignored.

Every write endpoint parses its JSON body with a StrictInput subclass (or `no_body(request)` when it takes
none); tests/payments_project/test_strict_input.py sends an unknown field to every write operation of the
schema, so a new endpoint that forgets fails there.
"""

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.request import Request


# The base of every request-body serializer: unknown fields are refused, each named in `errors`. (A comment,
# not a docstring: drf-spectacular would describe every subclass without one of its own with it.)
class StrictInput(serializers.Serializer[Any]):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object"]})
        known = {name for name, field in self.fields.items() if not field.read_only}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise serializers.ValidationError({key: ["Unknown field"] for key in unknown})
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a string: DRF's UUIDField also takes an integer (`500` as UUID(int=500)), which the
    contract (`format: uuid`, a string) does not allow."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class NoInput(StrictInput):
    """An endpoint that takes no fields: an empty body or {}; anything else is refused."""


def no_body(request: Request) -> None:
    """Refuse a body with fields on an endpoint that takes none (before it changes anything): a JSON object
    with fields is a 400 naming them, another media type a 415. An empty body (or an empty form, as test
    clients and form libraries send with a bare POST) is no body."""
    raw = request._request
    if not raw.body:
        return
    if request.content_type.startswith("multipart/form-data") and not raw.POST and not raw.FILES:
        return
    NoInput(data=request.data if request.data is not None else {}).is_valid(raise_exception=True)
