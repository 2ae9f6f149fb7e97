import json
import uuid

import pytest
import structlog
from django.db import connection
from django.test import Client

from tests.support.auth import bearer

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def test_healthz_answers_without_touching_dependencies(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_sane_request_id_is_echoed_and_put_into_problems(client: Client) -> None:
    response = client.get("/api/v1/no-such-thing", HTTP_X_REQUEST_ID="req-12345678")

    assert response["X-Request-ID"] == "req-12345678"
    assert response.json()["request_id"] == "req-12345678"


@pytest.mark.parametrize("incoming", ["", "short", "evil\r\nSet-Cookie: x=1", "x" * 200, "spaces are not allowed"])
def test_an_absent_or_insane_request_id_is_replaced_by_a_new_one(client: Client, incoming: str) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)

    assert response["X-Request-ID"] != incoming
    assert len(response["X-Request-ID"]) == 32


def test_djangos_own_404_under_the_api_is_problem_json(client: Client) -> None:
    response = client.get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert set(body) >= {"type", "title", "status", "detail", "request_id"}


@pytest.mark.urls("tests.payments_project.error_views")
def test_a_validation_error_lists_each_field(client: Client) -> None:
    response = client.post("/api/v1/test/validate", {"amount": 0}, content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    errors = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert set(errors) == {"amount", "currency"}


@pytest.mark.urls("tests.payments_project.error_views")
def test_an_error_in_a_list_names_the_item_by_its_index(client: Client) -> None:
    body = {"amount": 1, "currency": "eur", "user_ids": ["not-a-uuid", "01a22594-930a-7b21-a7e0-49c83f618f78", "x"]}

    response = client.post("/api/v1/test/validate", body, content_type="application/json")

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["user_ids[0]", "user_ids[2]"]


@pytest.mark.urls("tests.payments_project.error_views")
def test_a_body_that_is_not_json_is_a_400_problem(client: Client) -> None:
    response = client.post("/api/v1/test/validate", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM


@pytest.mark.urls("tests.payments_project.error_views")
def test_a_wrong_content_type_is_a_415_problem(client: Client) -> None:
    response = client.post("/api/v1/test/validate", "amount=1", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response["Content-Type"] == PROBLEM


@pytest.mark.urls("tests.payments_project.error_views")
def test_an_application_error_keeps_its_status_code_and_headers(client: Client) -> None:
    response = client.get("/api/v1/test/dependency")

    assert response.status_code == 503
    assert response["Retry-After"] == "60"
    assert response.json()["type"].endswith(":dependency_unavailable")
    assert response.json()["detail"] == "Stripe is not configured"


@pytest.mark.urls("tests.payments_project.error_views")
def test_an_unhandled_error_is_a_500_problem_without_internals() -> None:
    client = Client(raise_request_exception=False)

    response = client.get("/api/v1/test/broken")

    assert response.status_code == 500
    assert response["Content-Type"] == PROBLEM
    assert "a bug" not in json.dumps(response.json())


@pytest.mark.urls("tests.payments_project.error_views")
def test_a_view_needs_authentication_by_default(client: Client) -> None:
    response = client.get("/api/v1/test/private")

    assert response.status_code in (401, 403)
    assert response["Content-Type"] == PROBLEM


@pytest.mark.urls("tests.payments_project.error_views")
def test_a_wrong_method_is_a_405_problem(client: Client) -> None:
    response = client.delete("/api/v1/test/dependency")

    assert response.status_code == 405
    assert response["Content-Type"] == PROBLEM


def test_metrics_are_exposed_for_prometheus(client: Client) -> None:
    client.get("/healthz")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"django_http_requests_total_by_method_total" in response.content


def test_the_openapi_schema_and_swagger_ui_are_served(client: Client) -> None:
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert b"openapi" in schema.content
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


@pytest.mark.django_db(transaction=True)
def test_readyz_leaves_no_statement_timeout_on_the_reused_connection(client: Client) -> None:
    def statement_timeout() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            return str(cursor.fetchone()[0])

    before = statement_timeout()  # the process kind's own (settings.DATABASE_SESSION_TIMEOUTS)
    client.get("/readyz")

    assert statement_timeout() == before


def test_the_callers_user_id_is_on_every_log_line_of_the_request(client: Client) -> None:
    user_id = uuid.uuid4()
    client.get("/api/v1/entitlements", HTTP_AUTHORIZATION=bearer(user_id), HTTP_X_REQUEST_ID="req-logs-0001")

    assert structlog.contextvars.get_contextvars() == {"request_id": "req-logs-0001", "user_id": str(user_id)}
