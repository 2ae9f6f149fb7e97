"""The catalog import: plans, features, family seats and Stripe price ids from one JSON file.

The format is `catalog.schema.json` beside this module (and the README). The import is an upsert
keyed by feature key, plan code and Stripe price id, in one transaction after the whole file has
been validated: a bad file changes nothing. Prices of an imported plan that the file no longer lists
are deactivated (orders keep pointing at them); plans the file does not mention are left alone.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from django.db import transaction
from django.dispatch import Signal

from billing.errors import CatalogInvalid
from billing.models import Feature, Plan, Price

SCHEMA = json.loads((Path(__file__).parent / "catalog.schema.json").read_text())


@dataclass
class CatalogImportResult:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    deactivated_prices: int = 0

    def summary(self) -> str:
        parts = [
            f"{kind}: {self.created[kind]} created, {self.updated[kind]} updated"
            for kind in ("features", "plans", "prices")
        ]
        return "; ".join(parts) + f"; {self.deactivated_prices} prices deactivated"


def _where(path: Any) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path) or "(the document)"


def catalog_validate(data: Any) -> list[str]:
    """Every problem in the file, each naming where it is; empty when the file is valid."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems = [f"{_where(error.absolute_path)}: {error.message}" for error in validator.iter_errors(data)]
    if problems:
        return sorted(problems)
    feature_keys = [feature["key"] for feature in data.get("features", [])]
    problems += [f"features: key {key!r} appears more than once" for key, n in Counter(feature_keys).items() if n > 1]
    codes = [plan["code"] for plan in data["plans"]]
    problems += [f"plans: code {code!r} appears more than once" for code, n in Counter(codes).items() if n > 1]
    price_ids = [price["stripe_price_id"] for plan in data["plans"] for price in plan["prices"]]
    problems += [f"prices: {pid!r} appears more than once" for pid, n in Counter(price_ids).items() if n > 1]
    known = set(feature_keys) | set(Feature.objects.filter(key__in=_referenced(data)).values_list("key", flat=True))
    for index, plan in enumerate(data["plans"]):
        problems += [
            f"plans[{index}].features: {key!r} is neither in this file's features nor already imported"
            for key in plan.get("features", [])
            if key not in known
        ]
    owners = dict(Price.objects.filter(stripe_price_id__in=price_ids).values_list("stripe_price_id", "plan__code"))
    for index, plan in enumerate(data["plans"]):
        for position, price in enumerate(plan["prices"]):
            owner = owners.get(price["stripe_price_id"])
            if owner is not None and owner != plan["code"]:
                problems.append(
                    f"plans[{index}].prices[{position}]: {price['stripe_price_id']!r} already belongs to plan {owner!r}"
                )
    return problems


def _referenced(data: dict[str, Any]) -> set[str]:
    return {key for plan in data["plans"] for key in plan.get("features", [])}


# Sent in the import's transaction with the ids of existing plans whose family seats or features changed:
# entitlements (an app above billing) refreshes their subscribers and families after commit.
plans_entitlements_changed = Signal()  # kwargs: plan_ids


@transaction.atomic(durable=True)
def catalog_import(*, data: Any) -> CatalogImportResult:
    """Validate the whole catalog, then upsert it in this one transaction (idempotent)."""
    problems = catalog_validate(data)
    if problems:
        raise CatalogInvalid("The catalog is invalid; nothing was imported:\n  " + "\n  ".join(problems))
    result = CatalogImportResult()
    for item in data.get("features", []):
        _, created = Feature.objects.update_or_create(key=item["key"], defaults={"name": item["name"]})
        result.created["features"] += created
        result.updated["features"] += not created
    features = {feature.key: feature for feature in Feature.objects.filter(key__in=_referenced(data))}
    before = {
        plan.code: (plan.family_seats, frozenset(plan.features.values_list("key", flat=True)))
        for plan in Plan.objects.filter(code__in=[item["code"] for item in data["plans"]])
    }
    changed = []
    for item in data["plans"]:
        plan, created = Plan.objects.update_or_create(
            code=item["code"],
            defaults={
                "name": item["name"],
                "family_seats": item.get("family_seats", 0),
                "active": item.get("active", True),
            },
        )
        result.created["plans"] += created
        result.updated["plans"] += not created
        plan.features.set([features[key] for key in item.get("features", [])])
        if not created and before[plan.code] != (plan.family_seats, frozenset(item.get("features", []))):
            changed.append(plan.id)
        listed = []
        for price_item in item["prices"]:
            _, created = Price.objects.update_or_create(
                stripe_price_id=price_item["stripe_price_id"],
                defaults={
                    "plan": plan,
                    "currency": price_item["currency"].lower(),
                    "unit_amount": price_item["unit_amount"],
                    "interval": price_item["interval"],
                    "active": price_item.get("active", True),
                },
            )
            listed.append(price_item["stripe_price_id"])
            result.created["prices"] += created
            result.updated["prices"] += not created
        result.deactivated_prices += (
            Price.objects.filter(plan=plan, active=True).exclude(stripe_price_id__in=listed).update(active=False)
        )
    if changed:
        plans_entitlements_changed.send(sender=Plan, plan_ids=changed)
    return result
