"""Thin views: parse, call one selector or service, serialize."""

import re
import uuid
from typing import Any, cast

from drf_spectacular.utils import OpenApiResponse, extend_schema
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
    InvitationCreatedOutput,
    InvitationInput,
    entitlements_body,
)
from entitlements.cache import HitCounter
from entitlements.errors import FamilyNotFound
from payments_project import ratelimit
from payments_project.auth import Principal
from payments_project.errors import ValidationFailed
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
    # Limited as api_read, its counter counted in the same Redis round trip as the cache read (issue 18).
    rate_limit_group = None

    @extend_schema(
        operation_id="entitlement_check",
        responses=EntitlementCheckOutput,
        summary="Whether the caller may use one feature",
    )
    def get(self, request: Request, feature_key: str) -> Response:
        key = _feature_key(feature_key)
        window = ratelimit.window_for(request, "api_read")
        counter = HitCounter(window.name, window.ttl)
        entitled = selectors.user_entitlements(user_id=_caller(request).id, counter=counter).has(key)
        ratelimit.enforce(window, counter.count)
        return Response({"feature": key, "entitled": entitled})


def _family_response(user_id: uuid.UUID, *, status: int = 200) -> Response:
    detail = selectors.family_detail(user_id=user_id)
    if detail is None:
        raise FamilyNotFound("You neither own nor belong to a family")
    return Response(FamilyOutput(detail).data, status=status)


class FamilyApi(APIView):
    @extend_schema(
        operation_id="family_get", responses=FamilyOutput, summary="The family the caller owns or belongs to"
    )
    def get(self, request: Request) -> Response:
        return _family_response(_caller(request).id)

    @extend_schema(
        operation_id="family_create",
        request=None,
        responses={201: FamilyOutput, 403: OpenApiResponse(description="no active family plan"), 409: None},
        summary="Create the caller's family (needs an active family plan)",
    )
    def post(self, request: Request) -> Response:
        services.family_group_create(
            owner_user_id=_caller(request).id, owner_email=_caller(request).email, request=request._request
        )
        return _family_response(_caller(request).id, status=201)


class FamilyInvitationCreateApi(APIView):
    @extend_schema(
        operation_id="family_invitation_create",
        request=InvitationInput,
        responses={201: InvitationCreatedOutput},
        summary="Invite someone by email",
    )
    def post(self, request: Request) -> Response:
        body = InvitationInput(data=request.data)
        body.is_valid(raise_exception=True)
        invitation, token = services.family_invitation_create(
            owner_user_id=_caller(request).id, email=body.validated_data["email"], request=request._request
        )
        return Response(InvitationCreatedOutput(invitation, context={"token": token}).data, status=201)


class FamilyInvitationAcceptApi(APIView):
    @extend_schema(
        operation_id="family_invitation_accept",
        request=None,
        responses={200: FamilyOutput},
        summary="Join the family (the token's email must be yours)",
    )
    def post(self, request: Request, token: str) -> Response:
        services.family_invitation_accept(
            token=token, user_id=_caller(request).id, email=_caller(request).email, request=request._request
        )
        return _family_response(_caller(request).id)


class FamilyMemberApi(APIView):
    @extend_schema(
        operation_id="family_member_remove",
        responses={204: None},
        summary="The owner removes a member, or a member leaves",
    )
    def delete(self, request: Request, user_id: uuid.UUID) -> Response:
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

    @extend_schema(
        operation_id="internal_entitlements_check",
        request=BulkCheckInput,
        responses=BulkCheckOutput,
        summary="Whether each user may use a feature (up to ENTITLEMENTS_BULK_MAX_IDS users)",
    )
    def post(self, request: Request) -> Response:
        body = BulkCheckInput(data=request.data)
        body.is_valid(raise_exception=True)
        data: dict[str, Any] = body.validated_data
        return Response({"results": selectors.users_entitled_by_id(user_ids=data["user_ids"], feature=data["feature"])})
