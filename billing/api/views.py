"""Thin views: parse, call one service or selector, serialize (HackSoft's CourseCreateApi)."""

import re
import uuid
from typing import Any, cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
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
    common_checkout_input,
    order_body,
)
from billing.errors import (
    CardDeclined,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    NoBillingAccount,
    RequestInProgress,
    StripeNotConfigured,
    StripeRateLimited,
    StripeRequestFailed,
    StripeTimedOut,
    StripeUnavailable,
    SubscriptionNotCancelable,
    SubscriptionNotChangeable,
    SubscriptionNotResumable,
)
from payments_project import plain_views, ratelimit
from payments_project.auth import Principal
from payments_project.errors import NotFound, ValidationFailed, exception_handler
from payments_project.inputs import no_body
from payments_project.json_body import MalformedJson, json_loads
from payments_project.openapi import problems, response_headers, response_links
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


# What any call to Stripe can answer (billing.gateway maps Stripe's errors to these).
_STRIPE_ERRORS = (StripeRequestFailed, StripeNotConfigured, StripeUnavailable, StripeTimedOut, StripeRateLimited)


def _caller(request: Request) -> Principal:
    """The JWT principal (every view here but the plans is IsAuthenticated by default)."""
    return cast(Principal, request.user)


class PlanListApi(APIView):
    """The catalog: public, the only client endpoint without a token. A token that is sent is still
    verified (the default authentication): a bad one is a 401, as everywhere, never silently ignored."""

    permission_classes = [AllowAny]

    @extend_schema(operation_id="plans_list", responses=PlanOutput(many=True))
    def get(self, request: Request) -> Response:
        return Response(PlanOutput(selectors.plan_list_active(), many=True).data)


class CheckoutSessionCreateApi(APIView):
    rate_limit_group = "checkout"

    @extend_schema(
        operation_id="checkout_session_create",
        request=CheckoutInput,
        parameters=_IDEMPOTENCY_HEADER,
        responses={
            201: OrderOutput,
            200: OpenApiResponse(OrderOutput, description="The same key and body again: the same order"),
            **problems(
                ValidationFailed,
                IdempotencyKeyMissing,
                CardDeclined,
                RequestInProgress,
                IdempotencyKeyReused,
                *_STRIPE_ERRORS,
            ),
        },
        extensions={
            **response_headers({200: ["Location"], 201: ["Location"]}),
            **response_links({201: {"order_get": {"order_id": "$response.body#/order_id"}}}),
        },
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request, "a retried checkout cannot start twice")
        body = CheckoutInput(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.order_start_checkout(
            user_id=_caller(request).id,
            # Only an address the identity provider vouches for goes on the customer: the user's own rows
            # are what GDPR matches them by (API.md, "Personal data"). Otherwise Stripe Checkout asks for it.
            email=_caller(request).verified_email,
            price_id=body.validated_data["price_id"],
            success_url=body.validated_data["success_url"],
            cancel_url=body.validated_data["cancel_url"],
            idempotency_key=key,
            request=request._request,
        )
        response = Response(OrderOutput(result.order).data, status=201 if result.created else 200)
        response["Location"] = f"/api/v1/orders/{result.order.id}"
        return response


_checkout_drf = CheckoutSessionCreateApi.as_view()
_JSON = JSONRenderer()  # REST_FRAMEWORK's one renderer
_CHECKOUT_ALLOW = "POST, OPTIONS"  # the Allow header DRF puts on each of CheckoutSessionCreateApi's answers


@csrf_exempt  # as DRF's views are: a Bearer token is no ambient credential
def checkout_session_create(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/checkout/sessions` without DRF's dispatch (issue 18, target 3; HotPathMiddleware routes
    here through hot_urls). Only the common case is answered here: a JSON body wanting a JSON answer, a
    valid Bearer token, Idempotency-Key and body. Anything else (no or a refused token, a bad key or body,
    another method or media type) goes to CheckoutSessionCreateApi, the view the URLconf and the OpenAPI
    schema name, which answers it exactly as before: nothing has been counted or written by then."""
    common = _common_checkout(request)
    if common is None:
        return cast(HttpResponse, _checkout_drf(request))
    principal, key, body = common
    request.user = principal  # type: ignore[assignment]  # the rate limit's key, as DRF's authentication sets it
    response: HttpResponse | None
    try:
        ratelimit.check_rate_limit(request, CheckoutSessionCreateApi.rate_limit_group)  # as its throttle does
        result = services.order_start_checkout(
            user_id=principal.id,
            email=principal.verified_email,  # see CheckoutSessionCreateApi
            price_id=body["price_id"],
            success_url=body["success_url"],
            cancel_url=body["cancel_url"],
            idempotency_key=key,
            request=request,
        )
    except Exception as exc:
        # As DRF's dispatch: a problem for what the exception handler knows, the rest raised (a 500). (The
        # handler DRF is configured with, ratelimit's, only adds the counting of 401s: past authentication.)
        response = exception_handler(exc, {"request": request})
        if response is None:
            raise
    else:
        order = result.order
        content = _JSON.render(order_body(order))
        response = HttpResponse(content, status=201 if result.created else 200, content_type="application/json")
        response["Location"] = f"/api/v1/orders/{order.id}"
    response["Allow"] = _CHECKOUT_ALLOW
    return response


def _common_checkout(request: HttpRequest) -> tuple[Principal, str, dict[str, Any]] | None:
    """The caller, Idempotency-Key and validated body of a checkout CheckoutSessionCreateApi would take as
    it is, the same values it would read; None for any other request."""
    if request.method != "POST" or not (plain_views.negotiates_plain_json(request) and plain_views.sends_json(request)):
        return None
    key = request.META.get("HTTP_IDEMPOTENCY_KEY", "")
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        return None
    principal = plain_views.bearer_principal(request)
    if principal is None:
        return None
    raw = request.body  # BodySizeLimitMiddleware has refused a longer one; the DRF view reads it from memory
    if not raw or len(raw) > settings.API_MAX_BODY_BYTES:
        return None
    try:
        body = common_checkout_input(json_loads(raw))
    except MalformedJson:
        return None
    return None if body is None else (principal, key, body)


class OrderDetailApi(APIView):
    @extend_schema(operation_id="order_get", responses={200: OrderOutput, **problems(NotFound)})
    def get(self, request: Request, order_id: uuid.UUID) -> Response:
        order = selectors.order_get_for_user(user_id=_caller(request).id, order_id=order_id)
        return Response(OrderOutput(order).data)


class SubscriptionListApi(APIView):
    @extend_schema(
        operation_id="subscriptions_list", parameters=PAGINATION_PARAMETERS, responses=SubscriptionOutput(many=True)
    )
    def get(self, request: Request) -> Response:
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(selectors.subscription_list_for_user(user_id=_caller(request).id), request)
        return paginator.get_paginated_response(SubscriptionOutput(page, many=True).data)


class SubscriptionCancelApi(APIView):
    @extend_schema(
        operation_id="subscription_cancel",
        request=None,
        responses={
            200: SubscriptionOutput,
            **problems(
                NotFound,
                SubscriptionNotCancelable,
                *_STRIPE_ERRORS,
            ),
        },
    )
    def post(self, request: Request, subscription_id: uuid.UUID) -> Response:
        no_body(request)
        subscription = services.subscription_cancel(
            user_id=_caller(request).id, subscription_id=subscription_id, request=request._request
        )
        return Response(SubscriptionOutput(subscription).data)


class SubscriptionResumeApi(APIView):
    @extend_schema(
        operation_id="subscription_resume",
        request=None,
        responses={200: SubscriptionOutput, **problems(NotFound, SubscriptionNotResumable, *_STRIPE_ERRORS)},
    )
    def post(self, request: Request, subscription_id: uuid.UUID) -> Response:
        no_body(request)
        subscription = services.subscription_resume(
            user_id=_caller(request).id, subscription_id=subscription_id, request=request._request
        )
        return Response(SubscriptionOutput(subscription).data)


class SubscriptionChangePreviewApi(APIView):
    @extend_schema(
        operation_id="subscription_change_preview",
        parameters=[OpenApiParameter("price_id", OpenApiTypes.UUID, OpenApiParameter.QUERY, required=True)],
        responses={
            200: ChangePreviewOutput,
            **problems(ValidationFailed, NotFound, SubscriptionNotChangeable, *_STRIPE_ERRORS),
        },
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
        operation_id="subscription_change",
        request=ChangeInput,
        parameters=_IDEMPOTENCY_HEADER,
        responses={
            200: OpenApiResponse(
                SubscriptionOutput, description="The subscription: on the new plan (an upgrade), or until period end"
            ),
            **problems(
                ValidationFailed,
                IdempotencyKeyMissing,
                NotFound,
                SubscriptionNotChangeable,
                RequestInProgress,
                IdempotencyKeyReused,
                CardDeclined,
                *_STRIPE_ERRORS,
            ),
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
    @extend_schema(operation_id="payments_list", parameters=PAGINATION_PARAMETERS, responses=PaymentOutput(many=True))
    def get(self, request: Request) -> Response:
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(selectors.payment_list_for_user(user_id=_caller(request).id), request)
        return paginator.get_paginated_response(PaymentOutput(page, many=True).data)


class BillingPortalSessionCreateApi(APIView):
    """Stripe's customer portal: payment methods and invoices."""

    @extend_schema(
        operation_id="billing_portal_session_create",
        request=BillingPortalInput,
        responses={201: BillingPortalOutput, **problems(ValidationFailed, NoBillingAccount, *_STRIPE_ERRORS)},
    )
    def post(self, request: Request) -> Response:
        body = BillingPortalInput(data=request.data)
        body.is_valid(raise_exception=True)
        url = services.billing_portal_session_create(
            user_id=_caller(request).id, return_url=body.validated_data["return_url"], request=request._request
        )
        return Response(BillingPortalOutput({"url": url}).data, status=201)


class InvoiceListApi(APIView):
    @extend_schema(operation_id="invoices_list", parameters=PAGINATION_PARAMETERS, responses=InvoiceOutput(many=True))
    def get(self, request: Request) -> Response:
        paginator = NewestFirstPagination()
        page = paginator.paginate_queryset(selectors.invoice_list_for_user(user_id=_caller(request).id), request)
        return paginator.get_paginated_response(InvoiceOutput(page, many=True).data)
