import copy
import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.models import Feature, Plan, Price
from tests.billing.factories import PriceFactory

pytestmark = pytest.mark.django_db

CATALOG: dict[str, Any] = {
    "features": [{"key": "hd", "name": "HD video"}, {"key": "offline", "name": "Offline downloads"}],
    "plans": [
        {
            "code": "basic",
            "name": "Basic",
            "features": ["hd"],
            "prices": [
                {"stripe_price_id": "price_basic_m", "currency": "EUR", "unit_amount": 499, "interval": "month"}
            ],
        },
        {
            "code": "family",
            "name": "Family",
            "family_seats": 5,
            "features": ["hd", "offline"],
            "prices": [
                {"stripe_price_id": "price_family_m", "currency": "eur", "unit_amount": 1299, "interval": "month"},
                {"stripe_price_id": "price_family_y", "currency": "eur", "unit_amount": 12990, "interval": "year"},
            ],
        },
    ],
}


def write(tmp_path: Path, data: Any, name: str = "catalog.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def snapshot() -> list[tuple[Any, ...]]:
    plans = [
        (p.id, p.code, p.name, p.family_seats, p.active, sorted(f.key for f in p.features.all()))
        for p in Plan.objects.order_by("code")
    ]
    prices = list(Price.objects.order_by("stripe_price_id").values_list())
    features = list(Feature.objects.order_by("key").values_list())
    return [*plans, *prices, *features]


def test_it_imports_plans_features_seats_and_prices(tmp_path: Path) -> None:
    call_command("import_catalog", write(tmp_path, CATALOG))

    family = Plan.objects.get(code="family")
    assert family.family_seats == 5
    assert sorted(f.key for f in family.features.all()) == ["hd", "offline"]
    assert sorted(family.prices.values_list("stripe_price_id", "currency", "unit_amount", "interval")) == [
        ("price_family_m", "eur", 1299, "month"),
        ("price_family_y", "eur", 12990, "year"),
    ]
    assert Price.objects.get(stripe_price_id="price_basic_m").currency == "eur"  # stored in Stripe's spelling


def test_importing_the_same_file_twice_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, CATALOG)
    call_command("import_catalog", path)
    before = snapshot()

    call_command("import_catalog", path)

    assert snapshot() == before


def test_a_changed_file_updates_in_place_and_retires_prices_it_no_longer_lists(tmp_path: Path) -> None:
    call_command("import_catalog", write(tmp_path, CATALOG))
    family_id = Plan.objects.get(code="family").id
    changed = copy.deepcopy(CATALOG)
    changed["plans"][1]["family_seats"] = 3
    changed["plans"][1]["features"] = ["offline"]
    changed["plans"][1]["prices"] = changed["plans"][1]["prices"][:1]
    changed["plans"][1]["prices"][0]["unit_amount"] = 1499

    call_command("import_catalog", write(tmp_path, changed, "v2.json"))

    family = Plan.objects.get(code="family")
    assert family.id == family_id
    assert family.family_seats == 3
    assert [f.key for f in family.features.all()] == ["offline"]
    assert Price.objects.get(stripe_price_id="price_family_m").unit_amount == 1499
    assert Price.objects.get(stripe_price_id="price_family_y").active is False


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["plans"][1]["prices"][0].update(interval="weekly"), "plans[1].prices[0].interval"),
        (lambda c: c["plans"][1]["prices"][0].update(unit_amount=12.99), "plans[1].prices[0].unit_amount"),
        (lambda c: c["plans"][1]["prices"][0].update(currency="euro"), "plans[1].prices[0].currency"),
        (lambda c: c["plans"][1].update(family_seats=-1), "plans[1].family_seats"),
        (lambda c: c["plans"][1].pop("code"), "'code' is a required property"),
        (lambda c: c["plans"][1].update(features=["hd", "4k"]), "'4k' is neither in this file's features"),
        (lambda c: c["plans"][1].update(code="basic"), "code 'basic' appears more than once"),
        (lambda c: c["plans"][1]["prices"].append(dict(c["plans"][0]["prices"][0])), "'price_basic_m' appears more"),
        (lambda c: c["plans"][1].update(colour="red"), "Additional properties are not allowed"),
    ],
)
def test_an_invalid_file_is_rejected_with_a_clear_message_and_nothing_is_written(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    bad = copy.deepcopy(CATALOG)
    mutate(bad)  # the first plan stays valid: a half-import would have written it

    with pytest.raises(CommandError) as raised:
        call_command("import_catalog", write(tmp_path, bad))

    assert message in str(raised.value)
    assert "nothing was imported" in str(raised.value)
    assert Plan.objects.count() == Feature.objects.count() == Price.objects.count() == 0


def test_moving_a_price_to_another_plan_is_refused(tmp_path: Path) -> None:
    call_command("import_catalog", write(tmp_path, CATALOG))
    moved = copy.deepcopy(CATALOG)
    moved["plans"][0]["prices"].append(moved["plans"][1]["prices"].pop())
    before = snapshot()

    with pytest.raises(CommandError, match="'price_family_y' already belongs to plan 'family'"):
        call_command("import_catalog", write(tmp_path, moved, "moved.json"))

    assert snapshot() == before


def test_a_file_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"is not valid JSON: .*line 1"):
        call_command("import_catalog", write(tmp_path, "{plans: []"))


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_catalog", str(tmp_path / "nope.json"))


def test_the_demo_catalog_imports(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("import_catalog", str(settings.BASE_DIR / "billing" / "fixtures" / "demo_catalog.json"))

    assert Plan.objects.get(code="family").family_seats == 5
    assert Plan.objects.get(code="basic").features.count() == 1
    assert "plans: 2 created" in capsys.readouterr().out


# --- GET /api/v1/plans --------------------------------------------------------------------------


def test_the_plans_are_public_and_show_only_what_is_for_sale(tmp_path: Path, client: Client) -> None:
    call_command("import_catalog", write(tmp_path, CATALOG))
    retired = PriceFactory(plan=Plan.objects.get(code="basic"), active=False)
    PriceFactory(plan__code="legacy", plan__active=False)

    response = client.get("/api/v1/plans")

    assert response.status_code == 200
    plans = response.json()
    assert [plan["code"] for plan in plans] == ["basic", "family"]
    family = plans[1]
    assert family["name"] == "Family"
    assert family["family_seats"] == 5
    assert family["features"] == ["hd", "offline"]
    assert [(p["currency"], p["unit_amount"], p["interval"]) for p in family["prices"]] == [
        ("eur", 1299, "month"),
        ("eur", 12990, "year"),
    ]
    assert set(family["prices"][0]) == {"id", "currency", "unit_amount", "interval"}
    assert str(retired.id) not in json.dumps(plans)


def test_listing_plans_takes_the_same_few_queries_however_many_there_are(client: Client) -> None:
    for _ in range(2):
        PriceFactory()
    with CaptureQueriesContext(connection) as few:
        client.get("/api/v1/plans")
    for _ in range(20):
        PriceFactory()

    with CaptureQueriesContext(connection) as many:
        assert len(client.get("/api/v1/plans").json()) == 22

    assert len(many.captured_queries) == len(few.captured_queries) <= 4
