"""The OpenAPI contract's shared parts: one Problem schema, the problem responses a view declares, and the
postprocessing hook that adds what every route can answer (401, 429, 5xx, ...) and the response headers.

A view lists the errors only it can give, by their ApplicationError classes (or DRF/Django codes):

    @extend_schema(responses={201: OrderOutput, **problems(PriceNotFound, IdempotencyKeyReused)},
                   extensions=response_headers({201: ["Location"]}))

The hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) then adds, to every /api/ and /internal/ operation:
401 (with WWW-Authenticate) where a credential is required, 403 on the internal API (the allow-list), 429
(Retry-After), 500, 503 (Retry-After); 400 where the operation takes a body or parameters; 404 where the path
has parameters; 413 and 415 where it takes a body; `Link` on a 200 of a list that takes `cursor`; and marks
request bodies `additionalProperties: false` (payments_project.inputs.StrictInput refuses unknown fields).
"""

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from drf_spectacular.utils import OpenApiResponse

from payments_project.errors import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_TYPE_PREFIX,
    ApplicationError,
    DatabaseBusy,
    DependencyUnavailable,
)

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
RESPONSE_HEADERS = "x-jia-response-headers"  # a view's extension, turned into response headers by the hook
RESPONSE_LINKS = "x-jia-response-links"  # a view's extension, turned into OpenAPI links by the hook

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details (application/problem+json): every 4xx and 5xx of the API.",
    "properties": {
        "type": {
            "type": "string",
            "pattern": f"^{PROBLEM_TYPE_PREFIX}[a-z0-9_]+$",
            "description": f"Stable, machine-readable: `{PROBLEM_TYPE_PREFIX}<code>`; each response lists its codes",
            "examples": [f"{PROBLEM_TYPE_PREFIX}validation_error"],
        },
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "request_id": {"type": ["string", "null"], "description": "Also in the X-Request-ID response header"},
        "errors": {
            "type": "array",
            "description": "Validation errors, one per field (`field` is empty for the body as a whole)",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "detail", "request_id"],
}

HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
    "WWW-Authenticate": {"description": "The authentication scheme to use", "schema": {"type": "string"}},
    "Location": {"description": "The URL of the resource", "schema": {"type": "string"}},
    "Link": {
        "description": 'The next page, when there is one: `<URL>; rel="next"`',
        "schema": {"type": "string"},
    },
}

# Why a status happens, for the generic responses' descriptions.
_REASONS = {
    400: "The request is invalid",
    401: "No valid credential",
    402: "The payment was declined",
    403: "Not allowed",
    404: "Not found (also another user's object)",
    409: "Conflicts with the current state",
    410: "Gone",
    413: "The body is too large",
    415: "The body is not application/json",
    422: "Unprocessable",
    429: "Rate limited",
    500: "A bug on our side (reported)",
    502: "An upstream service failed",
    503: "A dependency is unavailable",
}

_TYPES_LINE = re.compile(r"Problem types: (.*)$", re.MULTILINE)


def _description(status: int, codes: Iterable[str]) -> str:
    types = ", ".join(f"`{PROBLEM_TYPE_PREFIX}{code}`" for code in sorted(set(codes)))
    return f"{_REASONS.get(status, 'Failed')}.\n\nProblem types: {types}"


def _codes_in(description: str) -> set[str]:
    match = _TYPES_LINE.search(description)
    if not match:
        return set()
    return set(re.findall(re.escape(PROBLEM_TYPE_PREFIX) + r"([a-z0-9_]+)", match.group(1)))


def problems(*errors: type[ApplicationError] | tuple[int, str]) -> dict[Any, OpenApiResponse]:
    """The problem+json responses of these errors, grouped by status, for extend_schema(responses=...).

    An error is an ApplicationError subclass, or `(status, code)` for DRF's and Django's own.
    """
    by_status: dict[int, set[str]] = {}
    for error in errors:
        status, code = error if isinstance(error, tuple) else (error.status_code, error.code)
        by_status.setdefault(status, set()).add(code)
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(PROBLEM_REF, description=_description(status, codes))
        for status, codes in sorted(by_status.items())
    }


def response_headers(headers: Mapping[int, list[str]]) -> dict[str, Any]:
    """extend_schema(extensions=...) for the headers of a view's responses: `{201: ["Location"]}`."""
    return {RESPONSE_HEADERS: {str(status): list(names) for status, names in headers.items()}}


def response_links(links: Mapping[int, Mapping[str, Mapping[str, str]]]) -> dict[str, Any]:
    """extend_schema(extensions=...) for OpenAPI links from a response to the operations it leads to:
    `{201: {"order_get": {"order_id": "$response.body#/order_id"}}}` (operation id: its parameters)."""
    return {
        RESPONSE_LINKS: {
            str(status): {operation_id: dict(parameters) for operation_id, parameters in targets.items()}
            for status, targets in links.items()
        }
    }


# --- the hook ------------------------------------------------------------------------------------

_WRITE_METHODS = {"post", "put", "patch", "delete"}
_CLIENT_AUTH = {"not_authenticated", "authentication_failed", "token_not_valid"}
_SERVICE_AUTH = {"not_authenticated", "authentication_failed", "service_unauthenticated"}


def _add(operation: dict[str, Any], status: int, codes: set[str], headers: Iterable[str] = ()) -> None:
    responses = operation.setdefault("responses", {})
    response = responses.get(str(status))
    if response is None or PROBLEM_CONTENT_TYPE not in response.get("content", {}):
        response = responses[str(status)] = {
            "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}},
            "description": "",
        }
    response["description"] = _description(status, _codes_in(response["description"]) | codes)
    for name in headers:
        response.setdefault("headers", {})[name] = HEADERS[name]


def _secured(operation: dict[str, Any]) -> set[str]:
    """The security schemes the operation takes (a bad credential is a 401 even where none is required)."""
    return {name for requirement in operation.get("security", []) for name in requirement}


def _document_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    schemes = _secured(operation)
    if schemes:
        codes = _SERVICE_AUTH if path.startswith("/internal/") else _CLIENT_AUTH
        _add(operation, 401, codes, ["WWW-Authenticate"])
    if path.startswith("/internal/"):
        _add(operation, 403, {"service_forbidden", "permission_denied"})
    # A UUID in the path is matched by the URL itself (anything else is a 404); other parameters are validated.
    validated = [p for p in parameters if p["in"] != "path" or p.get("schema", {}).get("format") != "uuid"]
    if has_body or validated or method in _WRITE_METHODS:
        _add(operation, 400, {"validation_error", "parse_error"} if has_body or method in _WRITE_METHODS else set())
    if any(parameter["in"] == "path" for parameter in parameters):
        _add(operation, 404, {"not_found"})
    if has_body or method in _WRITE_METHODS:
        _add(operation, 413, {"payload_too_large"})
        _add(operation, 415, {"unsupported_media_type"})
    _add(operation, 429, {"rate_limited"}, ["Retry-After"])
    _add(operation, 500, {"internal_server_error"})
    _add(operation, 503, {DependencyUnavailable.code, DatabaseBusy.code}, ["Retry-After"])
    for status, response in operation["responses"].items():
        # An empty 400 line (a GET whose parameters are validated by its own code) gets the generic type.
        if PROBLEM_CONTENT_TYPE in response.get("content", {}) and not _codes_in(response["description"]):
            response["description"] = _description(int(status), {"validation_error"})
    operation["responses"] = dict(sorted(operation["responses"].items()))
    declared = operation.pop(RESPONSE_HEADERS, {})
    if any(parameter["in"] == "query" and parameter["name"] == "cursor" for parameter in parameters):
        declared.setdefault("200", []).append("Link")
    for status, names in declared.items():
        for name in names:
            operation["responses"][status].setdefault("headers", {})[name] = HEADERS[name]
    for status, targets in operation.pop(RESPONSE_LINKS, {}).items():
        operation["responses"][status]["links"] = {
            operation_id: {"operationId": operation_id, "parameters": parameters}
            for operation_id, parameters in targets.items()
        }


def _strict_request_bodies(result: dict[str, Any]) -> None:
    schemas = result.get("components", {}).get("schemas", {})
    for item in result["paths"].values():
        for operation in item.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                ref = media.get("schema", {}).get("$ref", "")
                if ref.startswith("#/components/schemas/"):
                    schemas[ref.rsplit("/", 1)[1]]["additionalProperties"] = False


def _every_type(result: dict[str, Any]) -> list[str]:
    return sorted(
        {
            code
            for item in result["paths"].values()
            for operation in item.values()
            for response in operation.get("responses", {}).values()
            for code in _codes_in(str(response.get("description", "")))
        }
    )


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]: every operation documents every response it can give."""
    problem = copy.deepcopy(PROBLEM_SCHEMA)
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = problem
    for path, item in result["paths"].items():
        for method, operation in item.items():
            if path.startswith(("/api/", "/internal/")):
                _document_operation(path, method, operation)
    problem["properties"]["type"]["description"] += ". Every type the API gives: " + ", ".join(
        f"`{code}`" for code in _every_type(result)
    )
    _strict_request_bodies(result)
    result["components"]["schemas"] = dict(sorted(result["components"]["schemas"].items()))
    return result
