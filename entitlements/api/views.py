"""Thin views: parse, call one selector or service, serialize."""

import re
import uuid
from typing import cast

from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from entitlements import selectors, services
from entitlements.api.serializers import (
    FEATURE_KEY_PATTERN,
    BulkCheckInput,
    BulkCheckOutput,
    EntitlementCheckOutput,
    EntitlementsOutput,
    FamilyOutput,
    InvitationAcceptInput,
    InvitationCreatedOutput,
    InvitationInput,
    bulk_check_input,
    entitlements_body,
)
from entitlements.errors import (
    AlreadyInFamily,
    FamilyNotFound,
    FamilyPlanRequired,
    FamilySuspended,
    InvitationEmailMismatch,
    InvitationExpired,
    InvitationNotFound,
    InvitationUsed,
    MemberNotFound,
    NoSeatLeft,
    NotFamilyOwner,
    OwnerCannotLeave,
)
from payments_project import plain_views, ratelimit
from payments_project.auth import Principal
from payments_project.errors import RateLimited, ValidationFailed
from payments_project.inputs import no_body
from payments_project.openapi import problems
from payments_project.service_auth import InternalAPIView

_FEATURE_KEY = re.compile(FEATURE_KEY_PATTERN)


def _feature_key(raw: str) -> str:
    if not _FEATURE_KEY.fullmatch(raw):
        raise ValidationFailed(
            "A feature key is 1 to 64 letters, digits, '-' or '_'",
            errors=[{"field": "feature_key", "message": "1 to 64 letters, digits, '-' or '_'"}],
        )
    return raw


# --- Client API (JWT) ---------------------------------------------------------------------------


def _caller(request: Request) -> Principal:
    """The JWT principal (the client views are IsAuthenticated by default)."""
    return cast(Principal, request.user)


class EntitlementListApi(APIView):
    @extend_schema(
        operation_id="entitlements_list",
        responses=EntitlementsOutput,
        summary="The caller's features and where each comes from",
    )
    def get(self, request: Request) -> Response:
        return Response(entitlements_body(selectors.user_entitlements(user_id=_caller(request).id)))


class EntitlementDetailApi(APIView):
    # Limited as api_read, its hits reported to Redis in batches (ratelimit.check_batched, issue 18).
    rate_limit_group = None

    @extend_schema(
        operation_id="entitlement_check",
        parameters=[OpenApiParameter("feature_key", str, OpenApiParameter.PATH, pattern=FEATURE_KEY_PATTERN)],
        responses={200: EntitlementCheckOutput, **problems(ValidationFailed)},
        summary="Whether the caller may use one feature",
    )
    def get(self, request: Request, feature_key: str) -> Response:
        key = _feature_key(feature_key)
        ratelimit.check_batched(request, "api_read")
        return Response({"feature": key, "entitled": selectors.user_entitlements(user_id=_caller(request).id).has(key)})


_check_drf = EntitlementDetailApi.as_view()
_ALLOW = "GET, HEAD, OPTIONS"
# The headers of EntitlementDetailApi's answer, in its order.
CHECK_HEADERS = (("Content-Type", "application/json"), ("Allow", _ALLOW))


def entitlement_check(request: HttpRequest, feature_key: str) -> HttpResponse:
    """`GET /api/v1/entitlements/{key}` without DRF's machinery, which cost more CPU than the check
    (issue 18; HotPathMiddleware routes here through hot_urls). Only the common case is answered here:
    a GET wanting plain JSON (plain_views), with a well-formed key and a valid Bearer token. Anything else
    (no or a refused token, a bad key, another method, Accept header or a query string) goes to
    EntitlementDetailApi, the view the URLconf and the OpenAPI schema name, which answers it exactly as
    before (401 counted against the IP, 400, 405, 406)."""
    principal = _common_case_principal(request, feature_key)
    if principal is None:
        return cast(HttpResponse, _check_drf(request, feature_key=feature_key))
    request.user = principal  # type: ignore[assignment]  # the rate limit's key, as DRF's authentication sets it
    refused = getattr(request, "rate_limit_refused", None)  # counted by entitlement_check_from_memory
    if refused is not None:
        raise refused  # HotPathMiddleware answers its problem
    ratelimit.check_batched(request, "api_read")  # RateLimited: HotPathMiddleware answers its problem
    entitled = selectors.user_entitlements(user_id=principal.id).has(feature_key)
    response = HttpResponse(_check_body(feature_key, entitled), content_type="application/json")  # no charset
    response["Allow"] = _ALLOW
    return response


def entitlement_check_from_memory(request: HttpRequest, feature_key: str) -> bytes | None:
    """entitlement_check's body when this process remembers the caller's cached answer: no round trip, no
    query (payments_project.hot_path sends it with CHECK_HEADERS and what the hot path's middleware adds,
    without building a response). None, nothing counted: entitlement_check answers. When the rate limit
    refuses the hit, the refusal is left on the request for entitlement_check to raise, not counted twice."""
    principal = _common_case_principal(request, feature_key)
    if principal is None:
        return None
    entitled = selectors.user_entitled_remembered(user_id=str(principal.id), feature=feature_key)
    if entitled is None:
        return None
    request.user = principal  # type: ignore[assignment]
    try:
        ratelimit.check_batched(request, "api_read")
    except RateLimited as refused:
        request.rate_limit_refused = refused  # type: ignore[attr-defined]
        return None
    return _check_body(feature_key, entitled)


def _common_case_principal(request: HttpRequest, feature_key: str) -> Principal | None:
    """The caller of a GET wanting JSON, as DRF would answer it (plain_views), with a well-formed key and a
    valid Bearer token; else None."""
    if request.method == "GET" and plain_views.negotiates_plain_json(request) and _FEATURE_KEY.fullmatch(feature_key):
        return plain_views.bearer_principal(request)
    return None


def _check_body(feature_key: str, entitled: bool) -> bytes:
    """The bytes DRF's JSONRenderer writes (the key is a slug: nothing to escape)."""
    return f'{{"feature":"{feature_key}","entitled":{"true" if entitled else "false"}}}'.encode()


def _family_response(user_id: uuid.UUID, *, status: int = 200) -> Response:
    detail = selectors.family_detail(user_id=user_id)
    if detail is None:
        raise FamilyNotFound("You neither own nor belong to a family")
    return Response(FamilyOutput(detail).data, status=status)


class FamilyApi(APIView):
    @extend_schema(
        operation_id="family_get",
        responses={200: FamilyOutput, **problems(FamilyNotFound)},
        summary="The family the caller owns or belongs to",
    )
    def get(self, request: Request) -> Response:
        return _family_response(_caller(request).id)

    @extend_schema(
        operation_id="family_create",
        request=None,
        responses={201: FamilyOutput, **problems(FamilyPlanRequired, AlreadyInFamily)},
        summary="Create the caller's family (needs an active family plan)",
    )
    def post(self, request: Request) -> Response:
        no_body(request)
        services.family_group_create(
            owner_user_id=_caller(request).id, owner_email=_caller(request).verified_email, request=request._request
        )
        return _family_response(_caller(request).id, status=201)


class FamilyInvitationCreateApi(APIView):
    @extend_schema(
        operation_id="family_invitation_create",
        request=InvitationInput,
        responses={
            201: InvitationCreatedOutput,
            **problems(FamilyNotFound, NotFamilyOwner, AlreadyInFamily, NoSeatLeft, FamilySuspended),
        },
        summary="Invite someone by email",
    )
    def post(self, request: Request) -> Response:
        body = InvitationInput(data=request.data)
        body.is_valid(raise_exception=True)
        invitation, token = services.family_invitation_create(
            owner_user_id=_caller(request).id, email=body.validated_data["email"], request=request._request
        )
        return Response(InvitationCreatedOutput(invitation, context={"token": token}).data, status=201)


_ACCEPT_ERRORS = (
    InvitationNotFound,
    InvitationEmailMismatch,
    InvitationExpired,
    InvitationUsed,
    AlreadyInFamily,
    NoSeatLeft,
    FamilySuspended,
)


class FamilyInvitationAcceptApi(APIView):
    """`POST /family/invitations/accept {"token"}`: the token travels in the body, never in a URL (which
    access logs, proxies and browser histories keep)."""

    @extend_schema(
        operation_id="family_invitation_accept",
        request=InvitationAcceptInput,
        responses={200: FamilyOutput, **problems(*_ACCEPT_ERRORS)},
        summary="Join the family (the token's email must be yours)",
    )
    def post(self, request: Request) -> Response:
        body = InvitationAcceptInput(data=request.data)
        body.is_valid(raise_exception=True)
        return _invitation_accept(request, body.validated_data["token"])


# RFC 9745: deprecated since this date; clients move to the body form (the Link names it).
INVITATION_PATH_DEPRECATED_SINCE = "@1796083200"  # 2026-12-01T00:00:00Z


class FamilyInvitationAcceptByPathApi(APIView):
    """The older form, `POST /family/invitations/{token}/accept`, kept for a deprecation period. Every log,
    trace and Sentry event writes its path with the token redacted (payments_project.url_secrets)."""

    @extend_schema(
        operation_id="family_invitation_accept_by_path",
        request=None,
        responses={200: FamilyOutput, **problems(*_ACCEPT_ERRORS)},
        summary="Join the family (deprecated: send the token in the body to …/invitations/accept)",
        deprecated=True,
    )
    def post(self, request: Request, token: str) -> Response:
        no_body(request)
        response = _invitation_accept(request, token)
        response["Deprecation"] = INVITATION_PATH_DEPRECATED_SINCE
        response["Link"] = '</api/v1/family/invitations/accept>; rel="successor-version"'
        return response


def _invitation_accept(request: Request, token: str) -> Response:
    services.family_invitation_accept(
        token=token, user_id=_caller(request).id, email=_caller(request).email, request=request._request
    )
    return _family_response(_caller(request).id)


class FamilyMemberApi(APIView):
    @extend_schema(
        operation_id="family_member_remove",
        responses={204: None, **problems(MemberNotFound, OwnerCannotLeave)},
        summary="The owner removes a member, or a member leaves",
    )
    def delete(self, request: Request, user_id: uuid.UUID) -> Response:
        no_body(request)
        services.family_member_remove(
            member_user_id=user_id, actor_user_id=_caller(request).id, request=request._request
        )
        return Response(status=204)


# --- Internal API (SPIFFE service identity) -----------------------------------------------------


class InternalUserEntitlementsApi(InternalAPIView):
    required_service_scope = "entitlements.read"

    @extend_schema(
        operation_id="internal_user_entitlements",
        responses=EntitlementsOutput,
        summary="A user's features (same body as the client endpoint)",
    )
    def get(self, request: Request, user_id: uuid.UUID) -> Response:
        return Response(entitlements_body(selectors.user_entitlements(user_id=user_id)))


class InternalEntitlementCheckApi(InternalAPIView):
    required_service_scope = "entitlements.read"
    throttle_classes = [ratelimit.BatchedRateLimitThrottle]  # "internal", most calls without a round trip

    @extend_schema(
        operation_id="internal_entitlements_check",
        request=BulkCheckInput,
        responses=BulkCheckOutput,
        summary="Whether each user may use a feature (up to ENTITLEMENTS_BULK_MAX_IDS users)",
    )
    def post(self, request: Request) -> Response:
        data = bulk_check_input(request.data)
        return Response({"results": selectors.users_entitled_by_id(user_ids=data["user_ids"], feature=data["feature"])})
