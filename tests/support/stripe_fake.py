"""Stripe, faked at its HTTP boundary: the one way every test meets Stripe.

- localstripe, a real Stripe-compatible HTTP server (one per test session), answers what it covers:
  customers, legacy plans, payment methods and intents, subscriptions, invoices, refunds, events.
- `StripeFake` stands in front of it in the test's process (through `responses`, so its hooks run in the
  calling thread) and answers what localstripe lacks (`stripe_standin.StripeStandIn`: Checkout Sessions,
  portal sessions, plan changes in today's dialect, subscription schedules) or what a test scripts: events
  and objects a test makes up, failures (5xx, 429, refusals). Everything else passes through to localstripe.
- It records every request the gateway sends: tests check effects at Stripe, never in our own code.
- A TCP proxy sits between the gateway and localstripe, so a test can take Stripe down and bring it back.

Worker subprocesses reach localstripe through that proxy only: what a test scripts lives in its own process.
The test's own hands on localstripe (`stripe_sdk`, for set-up and checks) bypass the fake and the proxy.
"""

import json
import re
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
import stripe

from tests.support.processes import background_process
from tests.support.proxy import TcpProxy, free_port
from tests.support.stripe_standin import STRIPE_KEY, Answer, StripeStandIn


@dataclass(frozen=True)
class StripeRequest:
    """One request the gateway sent to Stripe."""

    method: str
    path: str
    params: dict[str, str]  # the query, or the form body, as Stripe's flat keys (`metadata[order_id]`)
    idempotency_key: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Failure:
    route: str
    status: int
    error: dict[str, Any]
    after: int


def _on_route(route: str, request: StripeRequest) -> bool:
    """`"POST /v1/customers"` is that path exactly; `"DELETE /v1/customers/"` is any path below it."""
    method, path = route.split(" ", 1)
    return request.method == method and (request.path == path or (path.endswith("/") and request.path.startswith(path)))


def _json(status: int, body: dict[str, Any]) -> Answer:
    return status, {"Request-Id": "req_fake"}, json.dumps(body)


class StripeFake:
    """Stripe's API as the gateway sees it: localstripe, plus what the test scripts.

    Routes are written `"METHOD /path"`, as in `fail_next("POST /v1/checkout/sessions", 500, {...})`.
    """

    def __init__(self, base: str, proxy: TcpProxy, localstripe: str = "") -> None:
        self.base = base  # where the gateway (and a worker's STRIPE_API_BASE) points
        self.proxy = proxy  # `proxy.cut()`: Stripe is down; `proxy.restore()`: back
        self.standin = StripeStandIn(localstripe or "http://{}:{}".format(*proxy.target))
        self.requests: list[StripeRequest] = []
        self.failures: list[_Failure] = []  # pending scripted failures, in order
        self.objects: dict[str, dict[str, Any]] = {}  # GET /v1/<kind>/<id> answered with these, by id
        self.events: list[dict[str, Any]] | None = None  # once a test adds one, the fake lists events
        self._hooks: list[tuple[str, Callable[[StripeRequest], dict[str, Any] | None]]] = []
        self._lock = threading.Lock()

    # --- what a test scripts and reads ----------------------------------------------------------------

    def fail_next(self, route: str, status: int, error: dict[str, Any], *, times: int = 1, after: int = 0) -> None:
        """Answer the next `times` requests on `route` with `status` and Stripe's `{"error": error}`, once
        `after` more have been answered as usual."""
        with self._lock:
            self.failures += [_Failure(route, status, error, after if n == 0 else 0) for n in range(times)]

    def on(self, route: str, hook: Callable[[StripeRequest], dict[str, Any] | None]) -> None:
        """Run `hook` as each request on `route` arrives, in the calling thread, before it is answered
        (to look at the caller's state, or to make Stripe slow); a hook that returns an object answers the
        request with it (to act on what Stripe made before the caller learns of it)."""
        self._hooks.append((route, hook))

    def add_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """An event Stripe will list (GET /v1/events then lists only the events the test added)."""
        with self._lock:
            self.events = [*(self.events or []), event]
        return event

    def sent(self, route: str) -> list[StripeRequest]:
        """The requests the gateway sent on `route`, oldest first."""
        with self._lock:
            return [request for request in self.requests if _on_route(route, request)]

    # --- serving ------------------------------------------------------------------------------------

    @contextmanager
    def serving(self) -> Iterator["StripeFake"]:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            for method in (responses.GET, responses.POST, responses.DELETE):
                mock.add_callback(
                    method, re.compile(rf"{re.escape(self.base)}/"), callback=self._respond, match=[self._answers]
                )
            mock.add_passthru("http://127.0.0.1")  # localstripe (through the proxy or not), other loopback fakes
            yield self

    def _answers(self, prepared: requests.PreparedRequest) -> tuple[bool, str]:
        """responses' matcher: record the request, run its hooks, decide who answers it (the fake or localstripe)."""
        url = urlsplit(prepared.url or "")
        body = prepared.body.decode() if isinstance(prepared.body, bytes) else (prepared.body or "")
        request = StripeRequest(
            method=prepared.method or "",
            path=url.path,
            params=dict(parse_qsl(url.query or body)),
            idempotency_key=prepared.headers.get("Idempotency-Key"),
            headers=dict(prepared.headers),
        )
        with self._lock:
            self.requests.append(request)
        made = [
            made for route, hook in self._hooks if _on_route(route, request) and (made := hook(request)) is not None
        ]
        answer = _json(200, made[-1]) if made else self._answer(request)
        prepared.fake_answer = answer  # type: ignore[attr-defined]  # read back by _respond
        return answer is not None, "" if answer else "localstripe answers"

    def _respond(self, prepared: requests.PreparedRequest) -> Answer:
        answer = prepared.fake_answer  # type: ignore[attr-defined]
        return answer() if callable(answer) else answer  # type: ignore[no-any-return]

    def _answer(self, request: StripeRequest) -> Answer | Callable[[], Answer | None] | None:
        """The answer, or a function making it: the stand-in may itself call localstripe, which must happen in
        `_respond` (responses holds its lock while matchers such as `_answers` run)."""
        with self._lock:
            failure = next((f for f in self.failures if _on_route(f.route, request)), None)
            if failure is not None and failure.after > 0:
                failure.after -= 1
            elif failure is not None:
                self.failures.remove(failure)
                return _json(failure.status, {"error": failure.error})
        if _on_route("GET /v1/events", request) and self.events is not None:
            return self._event_list(request.params)
        if request.method == "GET" and (object_id := request.path.rsplit("/", 1)[-1]) in self.objects:
            return _json(200, self.objects[object_id])
        if self.standin.handles(request.method, request.path, request.params):
            return lambda: self.standin.answer(request.method, request.path, request.params)
        return None

    def _event_list(self, params: dict[str, str]) -> Answer:
        """Stripe's list semantics: newest first, `limit`, `created[gte]`, and the two cursors."""
        newest_first = list(reversed(self.events or []))
        if "created[gte]" in params:
            newest_first = [e for e in newest_first if e["created"] >= int(params["created[gte]"])]
        limit = int(params.get("limit", "10"))
        ids = [e["id"] for e in newest_first]
        if "starting_after" in params:
            rest = newest_first[ids.index(params["starting_after"]) + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif "ending_before" in params:
            if params["ending_before"] not in ids:
                error = {"type": "invalid_request_error", "message": f"No such event: '{params['ending_before']}'"}
                return _json(404, {"error": error})
            newer = newest_first[: ids.index(params["ending_before"])]
            page, has_more = newer[-limit:], len(newer) > limit
        else:
            page, has_more = newest_first[:limit], len(newest_first) > limit
        return _json(200, {"object": "list", "url": "/v1/events", "data": page, "has_more": has_more})


# --- fixtures (registered for the whole suite by tests/conftest.py) -------------------------------------


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """One localstripe server for the whole session; its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = Path(__file__).with_name("localstripe_main.py")

    def ready() -> bool:
        request = urllib.request.Request(f"{base}/v1/customers", headers={"Authorization": f"Bearer {STRIPE_KEY}"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=1):  # noqa: S310 - our own loopback fake
            return True

    with background_process([sys.executable, "-P", str(script), str(port)], name=f"localstripe-{port}", ready=ready):
        yield base


@pytest.fixture
def stripe_fake(settings: Any, localstripe: str) -> Iterator[StripeFake]:
    """Stripe for this test: the gateway pointed at the fake, with test-sized retries and breaker."""
    with TcpProxy(int(localstripe.rsplit(":", 1)[1])) as proxy:
        fake = StripeFake(f"http://127.0.0.1:{proxy.port}", proxy, localstripe)
        settings.STRIPE_API_KEY = STRIPE_KEY
        settings.STRIPE_API_BASE = fake.base
        settings.STRIPE_MAX_NETWORK_RETRIES = 1
        settings.STRIPE_CONNECT_TIMEOUT_SECONDS = 2.0
        settings.STRIPE_READ_TIMEOUT_SECONDS = 5.0
        settings.STRIPE_BREAKER_FAIL_MAX = 3
        settings.STRIPE_BREAKER_RESET_SECONDS = 2
        settings.BILLING_IN_FLIGHT_WAIT_SECONDS = 10.0
        with fake.serving():
            yield fake


@pytest.fixture
def stripe_sdk(localstripe: str) -> stripe.StripeClient:
    """The test's own hands on localstripe (setting up customers, plans, payments; checking effects)."""
    return stripe.StripeClient(
        STRIPE_KEY, base_addresses={"api": localstripe}, http_client=stripe.RequestsClient(timeout=5)
    )
