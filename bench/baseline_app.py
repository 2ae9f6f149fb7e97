"""The physical baselines: a bare one-file Django app, no middleware, no apps, served by gunicorn with the
same settings as the project's server in the same run (`gunicorn bench.baseline_app:application`).

    GET  /constant  a constant JSON body, no database: the least a Django request can cost
    POST /insert    the body INSERTed into `bench_baseline` (one statement, autocommit): the least a
                    write can cost

Same database as the project (DATABASE_URL, parsed by the same library) with the project's connection
handling (persistent connections, health checks), so the gap to a project figure is the project's own.
"""

import os
import uuid

import environ
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path

TABLE = "bench_baseline"  # created by bench.common.setup_database


def constant(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def insert(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    row_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE} (id, body) VALUES (%s, %s)", [row_id, request.body.decode() or "{}"])  # noqa: S608
    return JsonResponse({"id": str(row_id)}, status=201)


def _database() -> dict[str, object]:
    config: dict[str, object] = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    # As payments_project.settings.base.database_config does for PostgreSQL.
    config["CONN_MAX_AGE"] = int(os.environ.get("DATABASE_CONN_MAX_AGE", "60"))
    config["CONN_HEALTH_CHECKS"] = True
    config["OPTIONS"] = {"connect_timeout": 5}
    return config


urlpatterns = [path("constant", constant), path("insert", insert)]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-baseline-app-not-a-secret",  # noqa: S106 - signs nothing: no sessions, no CSRF
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={"default": _database()},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )

application = get_wsgi_application()
