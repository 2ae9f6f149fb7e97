"""The benchmark's URLs: the whole project, plus a bare view doing one INSERT (the baseline every
benchmark reports beside its own figures)."""

import uuid

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from payments_project.urls import urlpatterns as project_urlpatterns


@csrf_exempt
def baseline_insert(request: HttpRequest) -> HttpResponse:
    """One INSERT and nothing else, behind the same middleware: the least a request can cost."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_baseline (id, body) VALUES (%s, %s)", [uuid.uuid4(), request.body.decode() or "{}"]
        )
    return HttpResponse(status=201)


urlpatterns = [path("bench/baseline-insert", baseline_insert), *project_urlpatterns]
