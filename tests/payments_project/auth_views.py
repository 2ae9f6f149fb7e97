"""Test-only views and URLs for authentication, service identity and rate limits.

Each view counts its calls in CALLS, so a test can prove a refused request never reached it.
"""

from collections import Counter

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit.decorators import ratelimit
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments_project.ratelimit import rate_limited
from payments_project.service_auth import InternalAPIView
from payments_project.urls import urlpatterns as project_urlpatterns

CALLS: Counter[str] = Counter()


class MeView(APIView):
    """Default permission (authenticated) and default throttle: what the token said about the caller."""

    def get(self, request: Request) -> Response:
        CALLS["me"] += 1
        user = request.user
        return Response({"id": str(user.id), "email": user.email, "scopes": sorted(user.scopes)})

    def post(self, request: Request) -> Response:
        CALLS["me"] += 1
        return Response({"id": str(request.user.id)})


class PublicView(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        CALLS["public"] += 1
        return Response({"user": str(getattr(request.user, "id", "")) if request.user else None})


class CheckoutLikeView(APIView):
    rate_limit_group = "checkout"

    def post(self, request: Request) -> Response:
        CALLS["checkout"] += 1
        return Response({"ok": True}, status=201)


class DecoratedMethodView(APIView):
    rate_limit_group = None  # the method applies its own limit

    @rate_limited("checkout")
    def post(self, request: Request) -> Response:
        CALLS["decorated"] += 1
        return Response({"ok": True})


class EntitlementsReadView(InternalAPIView):
    required_service_scope = "entitlements.read"

    def get(self, request: Request) -> Response:
        CALLS["internal"] += 1
        return Response({"caller": request.user.pk})


class UnscopedInternalView(InternalAPIView):
    def get(self, request: Request) -> Response:
        CALLS["unscoped"] += 1
        return Response({})


@csrf_exempt
@rate_limited("webhook")
def webhook_like(request: HttpRequest) -> HttpResponse:
    """A plain Django view, as the Stripe webhook endpoint is."""
    CALLS["webhook"] += 1
    return JsonResponse({"received": True})


@ratelimit(group="legacy", key="ip", rate="1/m")
def legacy_ratelimited(request: HttpRequest) -> HttpResponse:
    """django-ratelimit's own decorator: its Ratelimited must still become 429 problem+json."""
    return JsonResponse({"ok": True})


urlpatterns = [
    path(
        "api/v1/test/",
        include(
            [
                path("me", MeView.as_view()),
                path("public", PublicView.as_view()),
                path("checkout", CheckoutLikeView.as_view()),
                path("decorated", DecoratedMethodView.as_view()),
                path("legacy", legacy_ratelimited),
            ]
        ),
    ),
    path("internal/v1/test/entitlements", EntitlementsReadView.as_view()),
    path("internal/v1/test/unscoped", UnscopedInternalView.as_view()),
    path("webhooks/test/", webhook_like),
    *project_urlpatterns,
]
