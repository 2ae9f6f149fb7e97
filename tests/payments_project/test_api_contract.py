"""Schemathesis against the committed contract (docs/openapi.yaml): every client and internal operation, called
through the Django WSGI app on the test database with valid credentials (a client JWT; a SPIFFE certificate in
XFCC for /internal/), with schema-valid (positive) and schema-invalid (negative) requests. Each response must be
no 5xx, a documented status, the documented content type, and match the documented schema and headers.

A failure names the operation (the test id) and prints the request that reproduces it (a curl command).
Stripe is the test fake (tests/support/stripe_fake.py). Bounded: EXAMPLES per operation and mode.
"""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
import schemathesis
import stripe
import yaml
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing import gateway, services
from billing.models import Customer, Subscription
from tests.billing.factories import FeatureFactory, OrderFactory, PriceFactory
from tests.support.auth import bearer
from tests.support.contract import COMMITTED_SCHEMA, every_door_open, operations
from tests.support.proxy import TcpProxy
from tests.support.stripe_fake import STRIPE_KEY, StripeFake
from tests.support.stripe_setup import customer_with_card, subscription_for

EXAMPLES = 15  # per operation and mode (and scenarios of the stateful test): ~30 s for the module
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


# Operations the schema links (a response's id leads to the next operation), for the stateful phase. The GDPR
# ones are linked too, but an open export or erasure refuses the next: fuzzed one by one above.
LINKED = ("checkout_session_create", "order_get")


@cache
def committed() -> dict[str, Any]:
    return yaml.safe_load(COMMITTED_SCHEMA.read_text())


@cache
def contract() -> Any:
    schema = schemathesis.openapi.from_dict(committed())
    schema.config.generation.update(with_security_parameters=False)  # our credentials, not made-up ones
    return schema


OPERATIONS = [(method.upper(), path) for method, path, _ in operations(committed())]


@pytest.fixture
def transactional_db(world: dict[str, Any]) -> None:
    """This module's tests commit to the test database (as pytest-django's transactional_db, which also makes
    it set the database up), but `world` empties it once for the module instead of after every test."""


@pytest.fixture(scope="module")
def world(
    django_db_setup: None, django_db_blocker: Any, localstripe: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The caller's account for the whole module: a live subscription (in local Stripe too, so it can be
    cancelled), an order, an active price to buy, a feature; Stripe is the fake (as the `stripe_fake` fixture
    sets it up). The database is committed to, as production does (checkout commits before it calls Stripe),
    and emptied once at the end: one flush for the module instead of one per operation."""
    sdk = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": localstripe}, http_client=stripe.RequestsClient())
    with (
        django_db_blocker.unblock(),
        TcpProxy(int(localstripe.rsplit(":", 1)[1])) as proxy,
    ):
        fake = StripeFake(f"http://127.0.0.1:{proxy.port}", proxy)
        try:
            with (
                override_settings(
                    STRIPE_API_KEY=STRIPE_KEY,
                    STRIPE_API_BASE=fake.base,
                    STRIPE_MAX_NETWORK_RETRIES=1,
                    RATE_LIMITS=dict.fromkeys(django_settings.RATE_LIMITS, "100000/m"),  # a fuzzer is no abuser
                ),
                fake.serving(),
            ):
                user_id = uuid.uuid4()
                price = PriceFactory(stripe_price_id=f"price_{uuid.uuid4().hex[:10]}")
                stripe_customer = customer_with_card(sdk, metadata={"user_id": str(user_id)})
                fetched = gateway.subscription_retrieve(subscription_for(sdk, stripe_customer["id"], price))
                with transaction.atomic():
                    services.subscription_upsert_from_stripe(
                        stripe_subscription={**fetched, "customer": stripe_customer},
                        event_created=datetime(2026, 1, 1, tzinfo=UTC),
                    )
                FeatureFactory(key="hd")
                order = OrderFactory(customer=Customer.objects.get(user_id=user_id), price=price)
                with every_door_open(tmp_path_factory.mktemp("pki"), user_id) as credentials:
                    yield {
                        "user_id": user_id,
                        "price_id": str(price.id),
                        "credentials": credentials,
                        "known": {
                            "order_id": str(order.id),
                            "subscription_id": str(Subscription.objects.get().id),
                            "user_id": str(user_id),
                            "feature_key": "hd",
                        },
                    }
        finally:
            call_command("flush", interactive=False, verbosity=0)


def _cases(operation: Any, mode: GenerationMode, world: dict[str, Any]) -> Any:
    """Generated cases; half of them, where the path names one of the caller's objects, name a real one,
    and a positive checkout buys the real price (random ids would only ever find 404s)."""
    generated = operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    known = {name: value for name, value in world["known"].items() if name in names}
    variants = [generated]
    if known and mode == GenerationMode.POSITIVE:
        variants.append(operation.as_strategy(generation_mode=mode, path_parameters=known))
    if mode == GenerationMode.POSITIVE and operation.path.endswith("/checkout/sessions"):

        def buying(case: Any) -> Any:
            if isinstance(case.body, dict):
                case.body["price_id"] = world["price_id"]
            return case

        variants.append(generated.map(buying))
    return st.one_of(variants)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_keeps_its_contract(
    method: str, path: str, mode: GenerationMode, world: dict[str, Any], transactional_db: None
) -> None:
    operation = contract()[path][method]
    app = get_wsgi_application()
    headers = world["credentials"](path)

    @given(case=_cases(operation, mode, world))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests every run: a failure reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def keeps_its_contract(case: Any) -> None:
        # From loopback, where the mTLS sidecar is (SERVICE_AUTH_TRUSTED_PEERS)
        response = case.call(app=app, headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})
        checks = [*CHECKS, negative_data_rejection] if mode == GenerationMode.NEGATIVE else CHECKS
        case.validate_response(response, checks=checks, headers=headers)

    try:
        keeps_its_contract()
    except Unsatisfiable:
        if mode != GenerationMode.NEGATIVE:
            raise
        pytest.skip("no input of this operation can be made invalid (no parameters, or free-form ones)")


def test_linked_operations_keep_their_contract(world: dict[str, Any], transactional_db: None) -> None:
    """Schemathesis's stateful phase along the schema's links: start a checkout, then read that order."""
    app = get_wsgi_application()

    class Workflow(contract().include(operation_id=[*LINKED]).as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # A new caller per scenario: a replayed scenario meets the same state (idempotency keys are per
            # caller), as Hypothesis requires of a state machine.
            self.headers = {"Authorization": bearer(uuid.uuid4(), email="linked@example.com")}

        def call(self, case: Any, **kwargs: Any) -> Any:
            if case.operation.path.endswith("/checkout/sessions") and isinstance(case.body, dict):
                case.body["price_id"] = world["price_id"]  # a real price, so the link leads to a real order
            return case.call(app=app, headers=self.headers)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=self.headers)

    Workflow.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=4,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
