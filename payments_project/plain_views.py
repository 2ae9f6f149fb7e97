"""A hot route's plain Django view answers the common case of its DRF view without DRF's dispatch (content
negotiation, authentication, parsers, throttles, exception handling and the serializers: a quarter of a
checkout's CPU, issue 18) and hands that DRF view everything else. These say when a request is the common
case, as DRF would judge it."""

from django.http import HttpRequest
from rest_framework.exceptions import APIException
from rest_framework.negotiation import DefaultContentNegotiation

from payments_project.auth import JWTAuthentication, Principal
from payments_project.errors import ApplicationError

# Accept headers for which DRF's negotiation (JSONRenderer alone, REST_FRAMEWORK's) picks plain
# `application/json`. None: no header, read as */*; a present but empty one is a 406 there.
_JSON_ACCEPTS = frozenset({None, "*/*", "application/json"})
# Longer Content-Types DRF's parser selection refuses unread (a 415).
_MAX_CONTENT_TYPE = DefaultContentNegotiation.max_media_type_length  # type: ignore[attr-defined]  # newer than the stubs
_JWT = JWTAuthentication()  # holds no state of its own (the keys and verified tokens are the backend's)


def negotiates_plain_json(request: HttpRequest) -> bool:
    """Whether DRF would answer in plain `application/json` (no `indent` or other parameter): an Accept of
    _JSON_ACCEPTS, and no query string (`?format=` chooses a renderer too)."""
    meta = request.META
    return meta.get("HTTP_ACCEPT") in _JSON_ACCEPTS and not meta.get("QUERY_STRING")


def sends_json(request: HttpRequest) -> bool:
    """Whether DRF would read the body with its JSON parser (JSONBodyParser): Content-Type application/json,
    whatever its parameters (DRF's parser selection ignores them)."""
    return request.content_type == "application/json" and len(request.META.get("CONTENT_TYPE", "")) <= _MAX_CONTENT_TYPE


def bearer_principal(request: HttpRequest) -> Principal | None:
    """The caller when the request carries a valid Bearer token (remembered by its hash), else None: no
    token, a refused one, or keys that cannot be had now (the DRF view says which)."""
    try:
        return _JWT.remembered_principal(request)
    except (APIException, ApplicationError):
        return None
