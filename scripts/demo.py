"""`make demo`: a subscriber's journey, watched from the terminal, with no services and no Stripe account.

It starts the embedded stack as `make run` does (SQLite, kombu's filesystem broker, a web server and a worker,
on a fresh database in var/demo/) in front of a local Stripe stand-in (localstripe, behind our HTTP-boundary
stand-in for what it lacks: tests/support/stripe_standin.py), then plays both the client and Stripe:

plans listed → a subscription bought (checkout, then Stripe's signed webhooks) → the entitlement granted →
a plan change previewed and applied → a family member invited and entitled → cancellation, and access ending.

Each request is printed with its answer, briefly. It ends by itself (exit status 0 when every step did what it
should) and stops every process it started, whatever happens (each runs in its own process group, killed
on the way out).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import requests
import stripe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.proxy import free_port  # noqa: E402 - the repository root is on the path only now
from tests.support.stripe_standin import STRIPE_KEY, serve  # noqa: E402

VAR = ROOT / "var" / "demo"
PYTHON = sys.executable
WEBHOOK_SECRET = "whsec_demo_only"  # noqa: S105 - a demo secret, signing what the demo itself sends
QUEUES = "default,webhooks,outbox,gdpr,reconciliation"
STEP_TIMEOUT = 60.0


class DemoFailed(Exception):
    pass


# --- printing ------------------------------------------------------------------------------------


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def brief(value: Any, limit: int = 150) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the processes -------------------------------------------------------------------------------


class Stack:
    """The processes the demo started; `stop()` kills each one's whole process group."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (VAR / f"{name}.log").open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own commands
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def until(condition: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with suppress(requests.RequestException, stripe.StripeError, ValueError):
            found = condition()
            if found:
                return found
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out waiting for {what}")
        time.sleep(0.25)


def django_env(*, web_port: int, stripe_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "REDIS_"))}
    return {
        **env,
        "DJANGO_ENV": "development",
        "DATABASE_URL": f"sqlite:///{VAR / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "REDIS_URL": "",
        "PORT": str(web_port),
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "CHECKOUT_RETURN_URL_ORIGINS": "https://app.jia.example",  # the success and cancel URLs below
        "LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
    }


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own command
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise DemoFailed(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


@contextmanager
def embedded_stack() -> Iterator[tuple[str, stripe.StripeClient, Any]]:
    """localstripe, the stand-in in front of it, migrations and the demo catalog, web and worker."""
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    (ROOT / "var" / "broker").mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "broker-control").mkdir(parents=True, exist_ok=True)
    stack = Stack()
    server = None
    try:
        localstripe_port, stripe_port, web_port = free_port(), free_port(), free_port()
        localstripe = f"http://127.0.0.1:{localstripe_port}"
        script = ROOT / "tests" / "support" / "localstripe_main.py"
        stack.start("localstripe", [PYTHON, "-P", str(script), str(localstripe_port)], dict(os.environ))
        server, standin = serve(localstripe, stripe_port)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sdk = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": localstripe})
        until(lambda: sdk.v1.customers.list() is not None, "localstripe")

        env = django_env(web_port=web_port, stripe_port=stripe_port)
        print("Starting the embedded stack (SQLite, filesystem broker, web + worker) and the Stripe stand-in…")
        manage(env, "migrate", "--noinput")
        manage(env, "import_catalog", str(ROOT / "billing" / "fixtures" / "demo_catalog.json"))
        web = ["gunicorn", "payments_project.wsgi:application", "--bind", f"127.0.0.1:{web_port}"]
        stack.start("web", [PYTHON, "-m", *web, "--workers", "1", "--threads", "4", "--timeout", "60"], env)
        worker = ["celery", "-A", "payments_project", "worker", "-Q", QUEUES, "--pool", "threads"]
        stack.start("worker", [PYTHON, "-m", *worker, "--concurrency", "2", "--loglevel", "WARNING"], env)
        base = f"http://127.0.0.1:{web_port}"
        until(lambda: requests.get(f"{base}/healthz", timeout=2).ok, "the web server")
        yield base, sdk, (standin, env)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        stack.stop()


# --- the client and Stripe, as the demo plays them --------------------------------------------------


class Client:
    def __init__(self, base: str, name: str, token: str) -> None:
        self.base, self.name, self.token = base, name, token

    def call(self, method: str, path: str, body: Any = None, *, expect: int = 200, key: str = "") -> Any:
        shown = f" {brief(body, 90)}" if body is not None else ""
        print(f"  {self.name} → {method} {path}{shown}", flush=True)
        response = requests.request(
            method,
            f"{self.base}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}", **({"Idempotency-Key": key} if key else {})},
            timeout=30,
        )
        answer = response.json() if response.content else None
        print(f"  {self.name} ← {response.status_code} {brief(answer) if answer is not None else ''}", flush=True)
        if response.status_code != expect:
            raise DemoFailed(f"{method} {path} answered {response.status_code}, not {expect}: {response.text}")
        return answer

    def features(self) -> set[str]:
        response = requests.get(
            f"{self.base}/api/v1/entitlements", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        return {feature["key"] for feature in response.json()["features"]}


class Stripe:
    """Stripe's side: what the customer does on Stripe's pages, and the signed webhooks Stripe sends."""

    def __init__(self, base: str, sdk: stripe.StripeClient) -> None:
        self.base, self.sdk = base, sdk

    def send(self, event_type: str, obj: dict[str, Any]) -> None:
        event = {
            "id": f"evt_demo_{uuid.uuid4().hex[:20]}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
            "data": {"object": obj},
        }
        body = json.dumps(event)
        signature = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
        response = requests.post(
            f"{self.base}/webhooks/stripe/",
            data=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": signature},
            timeout=10,
        )
        print(
            f"  Stripe → POST /webhooks/stripe/ {event_type} (signed) ← {response.status_code} {brief(response.json())}"
        )
        if response.status_code != 200:
            raise DemoFailed(f"the webhook {event_type} answered {response.status_code}")

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return dict(self.sdk.v1.subscriptions.retrieve(subscription_id).to_dict())


def prices_in_localstripe(sdk: stripe.StripeClient, plans: list[dict[str, Any]], catalog: dict[str, Any]) -> None:
    """The catalog's recurring prices, in localstripe (as legacy plans with the prices' ids)."""
    for plan in catalog["plans"]:
        product = sdk.v1.products.create(params={"name": plan["name"]})
        for price in plan["prices"]:
            if price["interval"] != "one_time":
                sdk.v1.plans.create(
                    params={
                        "id": price["stripe_price_id"],
                        "amount": price["unit_amount"],
                        "currency": price["currency"],
                        "interval": price["interval"],
                        "product": product.id,
                    }
                )


def monthly(plans: list[dict[str, Any]], code: str) -> dict[str, Any]:
    plan = next(p for p in plans if p["code"] == code)
    return next(price for price in plan["prices"] if price["interval"] == "month")


def walk(base: str, sdk: stripe.StripeClient, standin: Any, env: dict[str, str]) -> None:
    alice_id, bob_id = uuid.uuid4(), uuid.uuid4()
    alice = Client(base, "alice", manage(env, "mint_token", "--user", str(alice_id), "--email", "alice@jia.example"))
    bob = Client(base, "bob  ", manage(env, "mint_token", "--user", str(bob_id), "--email", "bob@jia.example"))
    stripe_side = Stripe(base, sdk)
    catalog = json.loads((ROOT / "billing" / "fixtures" / "demo_catalog.json").read_text())

    step("1. Plans listed")
    plans = alice.call("GET", "/api/v1/plans")
    prices_in_localstripe(sdk, plans, catalog)
    basic, family = monthly(plans, "basic"), monthly(plans, "family")

    step("2. A subscription bought: checkout, then Stripe's signed webhooks")
    body = {
        "price_id": basic["id"],
        "success_url": "https://app.jia.example/welcome",
        "cancel_url": "https://app.jia.example/plans",
    }
    order = alice.call("POST", "/api/v1/checkout/sessions", body, expect=201, key=str(uuid.uuid4()))
    session_id = order["stripe_session_id"]
    customer_id = until(
        lambda: sdk.v1.customers.list(params={"limit": 100}).data, "the Stripe customer our checkout made"
    )[0].id
    amount = f"{basic['unit_amount'] / 100:.2f} {basic['currency'].upper()}"
    print(f"  (alice pays {amount} on Stripe's page {order['checkout_url']})")
    card = sdk.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    sdk.v1.payment_methods.attach(card.id, params={"customer": customer_id})
    sdk.v1.customers.update(customer_id, params={"invoice_settings": {"default_payment_method": card.id}})
    metadata = {"order_id": order["order_id"], "user_id": str(alice_id)}
    created = sdk.v1.subscriptions.create(
        params={"customer": customer_id, "items": [{"plan": standin.checkout_prices[session_id]}], "metadata": metadata}
    )
    stripe_side.send("customer.subscription.created", stripe_side.subscription(created.id))
    session = {
        "id": session_id,
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": customer_id,
        "subscription": created.id,
        "client_reference_id": order["order_id"],
        "metadata": metadata,
    }
    stripe_side.send("checkout.session.completed", session)

    step("3. The entitlement granted (the worker processed the webhooks)")
    until(lambda: "hd" in alice.features(), "alice's hd entitlement")
    subscription = until(
        lambda: [s for s in alice.call("GET", "/api/v1/subscriptions") if s["status"] == "active"], "the subscription"
    )[0]
    alice.call("GET", "/api/v1/entitlements/hd")

    step("4. A plan change previewed and applied (basic → family: an upgrade, prorated now)")
    path = f"/api/v1/subscriptions/{subscription['id']}"
    preview = alice.call("GET", f"{path}/change-preview?price_id={family['id']}")
    changed = alice.call(
        "POST",
        f"{path}/change",
        {"price_id": family["id"], "proration_date": preview["proration_date"]},
        key=str(uuid.uuid4()),
    )
    if changed["plan"] != "family":
        raise DemoFailed("the upgrade did not take effect")
    stripe_side.send("customer.subscription.updated", stripe_side.subscription(created.id))
    until(lambda: "offline" in alice.features(), "alice's offline entitlement")
    alice.call("GET", "/api/v1/entitlements")

    step("5. A family member invited and entitled")
    alice.call("POST", "/api/v1/family", {}, expect=201)
    invitation = alice.call("POST", "/api/v1/family/invitations", {"email": "bob@jia.example"}, expect=201)
    accept(bob, invitation["token"])
    until(lambda: "offline" in bob.features(), "bob's family entitlement")
    bob.call("GET", "/api/v1/entitlements")

    step("6. Cancellation, and access ending with the period")
    alice.call("POST", f"{path}/cancel")
    if not alice.features():
        raise DemoFailed("access ended before the period did")
    print("  (the paid period ends: Stripe ends the subscription)")
    sdk.v1.subscriptions.cancel(created.id)
    stripe_side.send("customer.subscription.deleted", stripe_side.subscription(created.id))
    until(lambda: not alice.features() and not bob.features(), "alice's and bob's access to end")
    alice.call("GET", "/api/v1/entitlements")
    bob.call("GET", "/api/v1/entitlements")


def accept(bob: Client, token: str) -> None:
    """The invitation token travels in the body; the older path with it in the URL answers too, meanwhile."""
    response = requests.post(
        f"{bob.base}/api/v1/family/invitations/accept",
        json={"token": token},
        headers={"Authorization": f"Bearer {bob.token}"},
        timeout=10,
    )
    if response.status_code in (404, 405):
        bob.call("POST", f"/api/v1/family/invitations/{token}/accept")
        return
    print('  bob   → POST /api/v1/family/invitations/accept {"token": "…"}')
    print(f"  bob   ← {response.status_code} {brief(response.json())}")
    if response.status_code != 200:
        raise DemoFailed(f"accepting the invitation answered {response.status_code}")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the clean-up below
    started = time.monotonic()
    try:
        with embedded_stack() as (base, sdk, (standin, env)):
            walk(base, sdk, standin, env)
    except DemoFailed as failure:
        print(f"\nDEMO FAILED: {failure}\n(logs in {VAR})", file=sys.stderr)
        return 1
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s; every process it started is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
