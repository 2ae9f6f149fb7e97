"""Thin views: parse, call one service or selector, serialize. A request of someone else is a 404."""

import uuid
from typing import Any, cast

from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gdpr import selectors, services
from gdpr.api.serializers import ErasureOutput, ExportOutput, NoInput
from gdpr.models import DataSubjectRequest, RequestKind
from payments_project.auth import Principal


def _caller(request: Request) -> Principal:
    return cast(Principal, request.user)


def _no_input(request: Request) -> None:
    body = NoInput(data=request.data if request.data is not None else {})
    body.is_valid(raise_exception=True)


def _accepted(body: dict[str, Any], data_request: DataSubjectRequest, path: str) -> Response:
    response = Response(body, status=202)
    response["Location"] = f"/api/v1/gdpr/{path}/{data_request.id}"
    return response


class ExportCreateApi(APIView):
    rate_limit_group = "gdpr"

    @extend_schema(
        request=None,
        responses={202: OpenApiResponse(ExportOutput, description="The new export, or the one already open")},
    )
    def post(self, request: Request) -> Response:
        _no_input(request)
        data_request, _ = services.data_request_create(
            kind=RequestKind.EXPORT, user_id=_caller(request).id, email=_caller(request).email, request=request._request
        )
        return _accepted(ExportOutput(data_request).data, data_request, "exports")


class ExportDetailApi(APIView):
    @extend_schema(responses=ExportOutput)
    def get(self, request: Request, request_id: uuid.UUID) -> Response:
        data_request = selectors.data_request_get_for_user(
            user_id=_caller(request).id, request_id=request_id, kind=RequestKind.EXPORT
        )
        return Response(ExportOutput(data_request).data)


class _AnyAccept(BaseContentNegotiation):
    """The archive is what it is whatever the client accepts (errors are problem+json regardless)."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0]

    def select_renderer(self, request: Request, renderers: Any, format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class ExportDownloadApi(APIView):
    rate_limit_group = "gdpr"
    content_negotiation_class = _AnyAccept

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="data.json plus csv/<table>.csv per table"
            ),
            302: OpenApiResponse(
                description="The object store's presigned URL of the archive (Location), valid for "
                "GDPR_EXPORT_URL_TTL_SECONDS"
            ),
            409: OpenApiResponse(description="Not finished yet"),
            410: OpenApiResponse(description="The download window is over"),
        }
    )
    def get(self, request: Request, request_id: uuid.UUID) -> FileResponse | HttpResponseRedirect:
        data_request, archive = services.export_download(
            user_id=_caller(request).id, request_id=request_id, request=request._request
        )
        response: FileResponse | HttpResponseRedirect
        if isinstance(archive, str):
            response = HttpResponseRedirect(archive)  # 302: the object store serves the bytes
        else:
            filename = services.export_download_filename(data_request)
            response = FileResponse(archive, as_attachment=True, filename=filename, content_type="application/zip")
        response["Cache-Control"] = "private, no-store"
        return response


class ErasureCreateApi(APIView):
    rate_limit_group = "gdpr"

    @extend_schema(
        request=None,
        responses={202: OpenApiResponse(ErasureOutput, description="The new erasure, or the one already open")},
    )
    def post(self, request: Request) -> Response:
        _no_input(request)
        data_request, _ = services.data_request_create(
            kind=RequestKind.ERASURE,
            user_id=_caller(request).id,
            email=_caller(request).email,
            request=request._request,
        )
        return _accepted(ErasureOutput(data_request).data, data_request, "erasure")


class ErasureDetailApi(APIView):
    @extend_schema(responses=ErasureOutput)
    def get(self, request: Request, request_id: uuid.UUID) -> Response:
        data_request = selectors.data_request_get_for_user(
            user_id=_caller(request).id, request_id=request_id, kind=RequestKind.ERASURE
        )
        return Response(ErasureOutput(data_request).data)
