"""The price every checkout test buys."""

import pytest

from billing.models import Price
from tests.billing.factories import PriceFactory


@pytest.fixture
def price() -> Price:
    return PriceFactory(stripe_price_id="price_family_month", plan__code="family", unit_amount=1299)
