"""Thin views: parse, call one service or selector, serialize (HackSoft's CourseCreateApi)."""

import re
import uuid
from typing import cast

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors, services
from billing.api.serializers import (
    BillingPortalInput,
    BillingPortalOutput,
    ChangeInput,
    ChangePreviewOutput,
    ChangePreviewQuery,
    CheckoutInput,
    InvoiceOutput,
    OrderOutput,
    PaymentOutput,
    PlanOutput,
    SubscriptionOutput,
)
from billing.errors import IdempotencyKeyMissing
from payments_project.auth import Principal
from payments_project.errors import ValidationFailed
from payments_project.pagination import PAGINATION_PARAMETERS, NewestFirstPagination

# Printable ASCII without spaces at the ends, like Stripe's own keys; at most the column's 255.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")


_IDEMPOTENCY_HEADER = [OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=True)]


def _idempotency_key(request: Request, why: str) -> str:
    """The request's Idempotency-Key header: required, 1 to 255 printable ASCII characters."""
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        raise IdempotencyKeyMissing(f"Send an Idempotency-Key header (e.g. a UUID) so {why}")
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed(
            "The Idempotency-Key must be 1 to 255 printable ASCII characters",
            errors=[{"field": "Idempotency-Key", "message": "1 to 255 printable ASCII characters"}],
        )
    return key


def _caller(request: Request) -> Principal:
    """The JWT principal (every view here but the plans is IsAuthenticated by default)."""
    return cast(Principal, request.user)


class PlanListApi(APIView):
    """The catalog: public, the only client endpoint without a token. A token that is sent is still
    verified (the default authentication): a bad one is a 401, as everywhere, never silently ignored."""

    permission_classes = [AllowAny]

    @extend_schema(responses=PlanOutput(many=True))
    def get(self, request: Request) -> Response:
        return Response(PlanOutput(selectors.plan_list_active(), many=True).data)


class CheckoutSessionCreateApi(APIView):
    rate_limit_group = "checkout"

    @extend_schema(
        request=CheckoutInput,
        parameters=_IDEMPOTENCY_HEADER,
        responses={
            201: OrderOutput,
            200: OpenApiResponse(OrderOutput, description="The same key and body again: the same order"),
        },
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request, "a retried checkout cannot start twice")
        body = CheckoutInput(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.order_start_checkout(
            user_id=_caller(request).id,
            email=_caller(request).email,
            price_id=body.validated_data["price_id"],
            success_url=body.validated_data["success_url"],
            cancel_url=body.validated_data["cancel_url"],
            idempotency_key=key,
            request=request._request,
        )
        response = Response(OrderOutput(result.order).data, status=201 if result.created else 200)
        response["Location"] = f"/api/v1/orders/{result.order.id}"
        return response


class OrderDetailApi(APIView):
    @extend_schema(responses=OrderOutput)
    def get(self, request: Request, order_id: uuid.UUID) -> Response:
        order = selectors.order_get_for_user(user_id=_caller(request).id, order_id=order_id)
        return Response(OrderOutput(order).data)


class SubscriptionListApi(APIView):
    @extend_schema(parameters=PAGINATION_PARAMETERS, responses=SubscriptionOutput(many=True))
    def get(self, request: Request) -> Response:
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(selectors.subscription_list_for_user(user_id=_caller(request).id), request)
        return paginator.get_paginated_response(SubscriptionOutput(page, many=True).data)


class SubscriptionCancelApi(APIView):
    @extend_schema(request=None, responses=SubscriptionOutput)
    def post(self, request: Request, subscription_id: uuid.UUID) -> Response:
        subscription = services.subscription_cancel(
            user_id=_caller(request).id, subscription_id=subscription_id, request=request._request
        )
        return Response(SubscriptionOutput(subscription).data)


class SubscriptionResumeApi(APIView):
    @extend_schema(request=None, responses=SubscriptionOutput)
    def post(self, request: Request, subscription_id: uuid.UUID) -> Response:
        subscription = services.subscription_resume(
            user_id=_caller(request).id, subscription_id=subscription_id, request=request._request
        )
        return Response(SubscriptionOutput(subscription).data)


class SubscriptionChangePreviewApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("price_id", OpenApiTypes.UUID, OpenApiParameter.QUERY, required=True)],
        responses=ChangePreviewOutput,
    )
    def get(self, request: Request, subscription_id: uuid.UUID) -> Response:
        query = ChangePreviewQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        preview = services.subscription_change_preview(
            user_id=_caller(request).id, subscription_id=subscription_id, price_id=query.validated_data["price_id"]
        )
        return Response(ChangePreviewOutput(preview).data)


class SubscriptionChangeApi(APIView):
    rate_limit_group = "checkout"

    @extend_schema(
        request=ChangeInput,
        parameters=_IDEMPOTENCY_HEADER,
        responses={
            200: OpenApiResponse(
                SubscriptionOutput, description="The subscription: on the new plan (an upgrade), or until period end"
            )
        },
    )
    def post(self, request: Request, subscription_id: uuid.UUID) -> Response:
        key = _idempotency_key(request, "a retried plan change cannot happen twice")
        body = ChangeInput(data=request.data)
        body.is_valid(raise_exception=True)
        subscription, _ = services.subscription_change(
            user_id=_caller(request).id,
            subscription_id=subscription_id,
            price_id=body.validated_data["price_id"],
            proration_date=body.validated_data.get("proration_date"),
            idempotency_key=key,
            request=request._request,
        )
        return Response(SubscriptionOutput(subscription).data)


class PaymentListApi(APIView):
    @extend_schema(parameters=PAGINATION_PARAMETERS, responses=PaymentOutput(many=True))
    def get(self, request: Request) -> Response:
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(selectors.payment_list_for_user(user_id=_caller(request).id), request)
        return paginator.get_paginated_response(PaymentOutput(page, many=True).data)


class BillingPortalSessionCreateApi(APIView):
    """Stripe's customer portal: payment methods and invoices."""

    @extend_schema(request=BillingPortalInput, responses={201: BillingPortalOutput})
    def post(self, request: Request) -> Response:
        body = BillingPortalInput(data=request.data)
        body.is_valid(raise_exception=True)
        url = services.billing_portal_session_create(
            user_id=_caller(request).id, return_url=body.validated_data["return_url"], request=request._request
        )
        return Response(BillingPortalOutput({"url": url}).data, status=201)


class InvoiceListApi(APIView):
    @extend_schema(parameters=PAGINATION_PARAMETERS, responses=InvoiceOutput(many=True))
    def get(self, request: Request) -> Response:
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(selectors.invoice_list_for_user(user_id=_caller(request).id), request)
        return paginator.get_paginated_response(InvoiceOutput(page, many=True).data)
