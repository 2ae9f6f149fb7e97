"""Views that fail in each way an API view can, to see what a client gets back."""

from django.urls import include, path
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments_project.errors import DependencyUnavailable
from payments_project.urls import urlpatterns as project_urlpatterns


class AmountSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1)
    currency = serializers.CharField(max_length=3)
    user_ids = serializers.ListField(child=serializers.UUIDField(), required=False)


class ValidatingView(APIView):
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        serializer = AmountSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.validated_data)


class DependencyDownView(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        raise DependencyUnavailable("Stripe is not configured", retry_after=60)


class BrokenView(APIView):
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        raise RuntimeError("a bug")


class PrivateView(APIView):
    def get(self, request: Request) -> Response:
        return Response({})


urlpatterns = [
    path(
        "api/v1/test/",
        include(
            [
                path("validate", ValidatingView.as_view()),
                path("dependency", DependencyDownView.as_view()),
                path("broken", BrokenView.as_view()),
                path("private", PrivateView.as_view()),
            ]
        ),
    ),
    *project_urlpatterns,
]
