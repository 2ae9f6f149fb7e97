"""The registry of personal data: every app's personal models are covered, in a fixed erasure order,
and gdpr learns about the apps only through it."""

import ast
import uuid
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from billing.models import Customer
from gdpr import registry
from gdpr.registry import DataSubject, PersonalDataProvider, providers, pseudonym_for, register

OUR_APPS = {"payments_project", "tasks", "gdpr", "billing", "entitlements", "webhooks"}
GDPR_DIR = Path(registry.__file__).parent


def _links_a_person(model: type[models.Model], depth: int = 2) -> bool:
    """A user id, an email, or a foreign key to billing's Customer (directly or through one more row)."""
    for field in model._meta.concrete_fields:
        if field.name in ("user_id", "email") or field.name.endswith(("_user_id", "_email")):
            return True
        related = field.related_model if field.is_relation else None
        if related is Customer:
            return True
        if depth > 1 and isinstance(related, type) and related is not model and _links_a_person(related, depth - 1):
            return True
    return False


def test_every_model_with_a_user_or_customer_link_has_a_provider() -> None:
    covered = {model for provider in providers() for model in provider.models}
    personal = [model for model in apps.get_models() if model._meta.app_label in OUR_APPS and _links_a_person(model)]

    missing = sorted(model._meta.label for model in personal if model not in covered)

    assert missing == []
    assert {model._meta.label for model in personal} >= {  # the walk does find them
        "billing.Customer",
        "billing.Order",
        "billing.Refund",
        "entitlements.FamilyInvitation",
        "entitlements.EntitlementSnapshot",
        "gdpr.DataSubjectRequest",
    }


def test_the_walk_would_catch_a_model_nobody_registered() -> None:
    # User: staff accounts, not data subjects of the client API
    assert _links_a_person(User)
    assert User not in {model for provider in providers() for model in provider.models}


def test_each_app_registers_its_provider_in_erasure_order() -> None:
    assert [provider.name for provider in providers()] == ["billing", "entitlements", "webhooks", "gdpr"]


def test_gdpr_imports_no_other_app() -> None:
    others = {"billing", "entitlements", "webhooks"}
    offenders = []
    for path in GDPR_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in others]
    assert offenders == []


def test_two_providers_cannot_share_a_name_but_registering_one_twice_is_harmless() -> None:
    billing = next(provider for provider in providers() if provider.name == "billing")
    register(billing)  # a second ready(), e.g. in a test runner: no change

    impostor = PersonalDataProvider(name="billing", order=1, models=(), export=lambda **_: {}, erase=lambda **_: None)
    with pytest.raises(ImproperlyConfigured, match="two personal-data providers"):
        register(impostor)
    assert providers()[0] is billing


def test_the_pseudonym_is_stable_per_user_and_keyed(settings: object) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()

    first = pseudonym_for(alice)

    assert first == pseudonym_for(str(alice)) and first.startswith("pseudo_") and len(first) == 31
    assert first != pseudonym_for(bob)
    assert str(alice) not in first and alice.hex not in first
    settings.GDPR_PSEUDONYM_KEY = "another-key-for-another-deployment-0123456789"  # type: ignore[attr-defined]
    assert pseudonym_for(alice) != first
    subject = DataSubject(user_id=alice, pseudonym=first)
    assert subject.pseudonymous_uuid == DataSubject(user_id=alice, pseudonym=first).pseudonymous_uuid
    assert subject.pseudonymous_uuid != alice
