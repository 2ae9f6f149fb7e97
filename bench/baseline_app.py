"""The physical baselines: a bare one-file Django app, no middleware, no apps, served by gunicorn with the
same settings as the project's server in the same run (`gunicorn bench.baseline_app:application`).

    GET  /constant  a constant JSON body, no database: the least a Django request can cost
    POST /insert    the body INSERTed into `bench_baseline` (one statement, autocommit): the least a
                    write can cost
    POST /checkout-floor  only what any checkout must do, nothing of ours: one Redis round trip (a
                    rate-limit counter), the order's INSERT (committed before Stripe is called), one form
                    POST to Stripe (STRIPE_API_BASE) on a kept-alive http.client connection, the outcome's
                    UPDATE: the least a checkout can cost. `?via=requests`: the POST through a requests
                    Session, stripe-python's transport, instead

Same database as the project (DATABASE_URL, parsed by the same library) with the project's connection
handling (persistent connections, health checks), so the gap to a project figure is the project's own.
"""

import http.client
import json
import os
import threading
import uuid
from functools import cache
from urllib.parse import urlencode, urlsplit

import environ
import redis
import requests
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


_per_thread = threading.local()  # each thread's kept-alive connection to Stripe, as a client keeps one


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _stripe_post(form: str, idempotency_key: str, *, via_requests: bool) -> dict[str, str]:
    base = os.environ["STRIPE_API_BASE"]
    headers = {
        "Authorization": "Bearer sk_test_bench",
        "Content-Type": "application/x-www-form-urlencoded",
        "Idempotency-Key": idempotency_key,
    }
    if via_requests:
        session = getattr(_per_thread, "session", None)
        if session is None:  # as the gateway's: the environment read once, not on every request
            session = _per_thread.session = requests.Session()
            session.trust_env = False
        prepared = requests.Request("POST", f"{base}/v1/checkout/sessions", data=form, headers=headers).prepare()
        answered = session.send(prepared, timeout=5).content
    else:
        address = urlsplit(base)
        conn = getattr(_per_thread, "conn", None) or http.client.HTTPConnection(address.netloc, timeout=5)
        _per_thread.conn = conn
        conn.request("POST", "/v1/checkout/sessions", body=form, headers=headers)
        answered = conn.getresponse().read()
    session_made: dict[str, str] = json.loads(answered)
    return session_made


def checkout_floor(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    body = json.loads(request.body)
    counter = f"bench-floor:{body['user']}"
    pipe = _redis().pipeline(transaction=False)
    pipe.incr(counter)
    pipe.expire(counter, 60)
    pipe.execute()
    order_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE} (id, body) VALUES (%s, %s)", [order_id, request.body.decode()])  # noqa: S608
    form = urlencode(
        {
            "mode": "subscription",
            "line_items[0][price]": body["price"],
            "line_items[0][quantity]": 1,
            "client_reference_id": str(order_id),
            "metadata[order_id]": str(order_id),
            "success_url": body["success_url"],
            "cancel_url": body["cancel_url"],
        }
    )
    session = _stripe_post(form, f"order:{order_id}", via_requests=request.GET.get("via") == "requests")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET body = %s WHERE id = %s", [json.dumps(session), order_id])  # noqa: S608
    return JsonResponse({"id": str(order_id), "url": session["url"]}, status=201)


def _database() -> dict[str, object]:
    config: dict[str, object] = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    # As payments_project.settings.base.database_config does for PostgreSQL.
    config["CONN_MAX_AGE"] = int(os.environ.get("DATABASE_CONN_MAX_AGE", "60"))
    config["CONN_HEALTH_CHECKS"] = True
    config["OPTIONS"] = {"connect_timeout": 5}
    return config


urlpatterns = [path("constant", constant), path("insert", insert), path("checkout-floor", checkout_floor)]

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
