"""What localstripe lacks, answered the way Stripe would: the one stand-in both the tests (through `StripeFake`,
in-process) and `make demo` (through `scripts/demo_stripe.py`, an HTTP front of localstripe) use.

- Checkout Sessions and customer-portal sessions: made up (localstripe has neither).
- Plan changes in today's dialect, translated into the one localstripe speaks: `items[0][price]` becomes
  `items[0][plan]` (our test catalogs create each price as a legacy plan with the same id), the item id and
  `proration_behavior` are dropped, and the request is sent to localstripe itself.
- Subscription schedules (the downgrade at period end): kept here, as Stripe would keep them, listed by id.

`answer(method, path, params)` returns (status, headers, body) or None when localstripe answers as is;
`serve(localstripe, port)` puts it in front of localstripe as an HTTP server (`make demo`).
"""

import itertools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

STRIPE_KEY = "sk_test_jia"
Answer = tuple[int, dict[str, str], str]


def _json(status: int, body: dict[str, Any]) -> Answer:
    return status, {"Request-Id": "req_fake", "Content-Type": "application/json"}, json.dumps(body)


def _error(status: int, message: str, param: str = "") -> Answer:
    return _json(status, {"error": {"type": "invalid_request_error", "message": message, "param": param}})


class StripeStandIn:
    def __init__(self, localstripe: str) -> None:
        self.localstripe = localstripe  # its own address (not through a proxy or a fake)
        self.schedules: dict[str, dict[str, Any]] = {}
        self.checkout_prices: dict[str, str] = {}  # checkout session id → the price it sells (the demo pays it)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def handles(self, method: str, path: str, params: dict[str, str]) -> bool:
        """Whether `answer` answers this request (cheap: no network, no state)."""
        return (
            (method == "POST" and path in ("/v1/checkout/sessions", "/v1/billing_portal/sessions"))
            or (method == "POST" and path == "/v1/invoices/create_preview")
            or (
                method == "POST"
                and path.startswith("/v1/subscriptions/")
                and any(k.startswith("items[") for k in params)
            )
            or path.startswith("/v1/subscription_schedules")
        )

    def answer(self, method: str, path: str, params: dict[str, str]) -> Answer | None:
        if method == "POST" and path == "/v1/checkout/sessions":
            return _json(200, self.checkout_session(params))
        if method == "POST" and path == "/v1/billing_portal/sessions":
            return _json(200, self.portal_session(params))
        if method == "POST" and path == "/v1/invoices/create_preview":
            return self._to_localstripe(method, path, _legacy_items(params, prefix="subscription_details[items]"))
        if method == "POST" and path.startswith("/v1/subscriptions/") and _has_items(params):
            return self._to_localstripe(method, path, _legacy_items(params, prefix="items"))
        if path.startswith("/v1/subscription_schedules"):
            return self._schedule(method, path, params)
        return None

    # --- made up --------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_test_{next(self._numbers):06d}{uuid.uuid4().hex[:8]}"

    def checkout_session(self, params: dict[str, str]) -> dict[str, Any]:
        session_id = self._id("cs")
        self.checkout_prices[session_id] = params.get("line_items[0][price]", "")
        return {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "mode": params.get("mode"),
            "status": "open",
            "customer": params.get("customer"),
            "client_reference_id": params.get("client_reference_id"),
            "metadata": {"order_id": params.get("metadata[order_id]"), "user_id": params.get("metadata[user_id]")},
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
        }

    def portal_session(self, params: dict[str, str]) -> dict[str, Any]:
        session_id = self._id("bps")
        return {
            "id": session_id,
            "object": "billing_portal.session",
            "customer": params.get("customer"),
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/{session_id}",
        }

    def _schedule(self, method: str, path: str, params: dict[str, str]) -> Answer:
        parts = path.strip("/").split("/")  # v1, subscription_schedules[, id]
        with self._lock:
            if method == "POST" and len(parts) == 2:
                subscription_id = params.get("from_subscription", "")
                attached = [s for s in self.schedules.values() if s["subscription"] == subscription_id]
                if any(s["status"] == "active" for s in attached):
                    return _error(400, "You cannot migrate a subscription that is already attached to a schedule")
                schedule_id = self._id("sub_sched")
                self.schedules[schedule_id] = {
                    "id": schedule_id,
                    "object": "subscription_schedule",
                    "subscription": subscription_id,
                    "status": "active",
                    "end_behavior": "release",
                    "phases": [],
                    "created": int(time.time()),
                }
                return _json(200, self.schedules[schedule_id])
            schedule = self.schedules.get(parts[2]) if len(parts) > 2 else None
            if schedule is None:
                return _error(404, f"No such subscription_schedule: '{parts[-1]}'")
            if method == "POST":
                phases: dict[int, dict[str, Any]] = {}
                for key, value in params.items():
                    if key.startswith("phases["):
                        index, rest = key[len("phases[") :].split("]", 1)
                        phases.setdefault(int(index), {})[rest] = value
                schedule["phases"] = [phases[i] for i in sorted(phases)] or schedule["phases"]
                schedule["end_behavior"] = params.get("end_behavior", schedule["end_behavior"])
            return _json(200, schedule)

    # --- localstripe, in its dialect ------------------------------------------------------------------

    def _to_localstripe(self, method: str, path: str, params: dict[str, str]) -> Answer:
        response = requests.request(
            method,
            f"{self.localstripe}{path}",
            data=params,
            headers={"Authorization": f"Bearer {STRIPE_KEY}"},
            timeout=10,
        )
        headers = {"Request-Id": "req_localstripe", "Content-Type": "application/json"}
        return response.status_code, headers, response.text


def _has_items(params: dict[str, str]) -> bool:
    return any(key.startswith("items[") for key in params)


def _legacy_items(params: dict[str, str], *, prefix: str) -> dict[str, str]:
    """`{prefix}[0][price]` → `[plan]`; the item id and proration_behavior dropped (localstripe refuses them)."""
    translated: dict[str, str] = {}
    for key, value in params.items():
        if key.startswith(prefix + "["):
            if key.endswith("[id]"):
                continue
            if key.endswith("[price]"):
                key = key[: -len("[price]")] + "[plan]"
        elif key.endswith("proration_behavior"):
            continue
        translated[key] = value
    return translated


def serve(localstripe: str, port: int) -> tuple[ThreadingHTTPServer, StripeStandIn]:
    """An HTTP server on 127.0.0.1:`port` answering as Stripe: the stand-in first, else localstripe. The caller
    runs `server.serve_forever()` (in a thread) and `server.shutdown()`."""
    standin = StripeStandIn(localstripe)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            params = dict(parse_qsl(url.query or body.decode()))
            answer = standin.answer(self.command, url.path, params)
            if answer is None:
                upstream = requests.request(
                    self.command,
                    f"{localstripe}{self.path}",
                    data=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")},
                    timeout=30,
                )
                answer = upstream.status_code, {"Content-Type": "application/json"}, upstream.text
            status, headers, text = answer
            payload = text.encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler), standin
