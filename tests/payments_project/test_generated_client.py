"""A Python client generated from the committed contract (openapi-python-client, into tmp_path) works against a
live server: it starts a checkout, reads the order back, and parses problem responses with their `type`.

The server is pytest-django's live_server (a real HTTP server in this process), not the gunicorn subprocess of
tests/support/server.py: Stripe's Checkout Sessions are answered by the in-process fake (tests/support/stripe_fake.py),
which a subprocess cannot reach.
"""

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing.models import Order
from tests.billing.factories import PriceFactory
from tests.support.auth import token
from tests.support.contract import COMMITTED_SCHEMA
from tests.support.stripe_fake import StripeFake

PACKAGE = "jia_payments_client"


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Any]:
    """The client package generated from docs/openapi.yaml, importable for this test only."""
    config = tmp_path / "generator.yaml"
    config.write_text(f"project_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\npost_hooks: []\n")
    generate = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(COMMITTED_SCHEMA)]
    result = subprocess.run(
        [*generate, "--config", str(config), "--meta", "none", "--output-path", str(tmp_path / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.mark.django_db(transaction=True)
def test_the_generated_client_checks_out_reads_the_order_and_parses_problems(
    generated: Any, live_server: Any, stripe_fake: StripeFake
) -> None:
    checkout = importlib.import_module(f"{PACKAGE}.api.api.checkout_session_create")
    order_get = importlib.import_module(f"{PACKAGE}.api.api.order_get")
    models = importlib.import_module(f"{PACKAGE}.models")
    price = PriceFactory()
    user_id = uuid.uuid4()
    client = generated.AuthenticatedClient(base_url=live_server.url, token=token(user_id, email="gen@example.com"))
    body = models.CheckoutInput(
        price_id=price.id, success_url="https://app.example/ok", cancel_url="https://app.example/no"
    )

    started = checkout.sync_detailed(client=client, body=body, idempotency_key="generated-1")
    read = order_get.sync_detailed(client=client, order_id=started.parsed.order_id)
    missing = order_get.sync_detailed(client=client, order_id=uuid.uuid4())
    refused = checkout.sync_detailed(
        client=client,
        body=models.CheckoutInput(price_id=uuid.uuid4(), success_url=body.success_url, cancel_url=body.cancel_url),
        idempotency_key="generated-2",
    )

    assert started.status_code == 201
    assert isinstance(started.parsed, models.OrderOutput)
    assert started.parsed.checkout_url.startswith("https://checkout.stripe.com/")
    assert started.headers["Location"] == f"/api/v1/orders/{started.parsed.order_id}"
    assert len(stripe_fake.sent("POST /v1/checkout/sessions")) == 1
    assert read.status_code == 200
    assert isinstance(read.parsed, models.OrderOutput)
    assert (read.parsed.order_id, read.parsed.status, read.parsed.price_id) == (
        started.parsed.order_id,
        models.OrderOutputStatusEnum.OPEN,
        price.id,
    )
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.type_ == "urn:jia:payments:problem:not_found"
    assert refused.status_code == 400
    assert isinstance(refused.parsed, models.Problem)
    assert refused.parsed.type_ == "urn:jia:payments:problem:validation_error"
    assert [(e.field, e.message) for e in refused.parsed.errors] == [("price_id", "No active price has this id")]
    assert Order.objects.count() == 1
