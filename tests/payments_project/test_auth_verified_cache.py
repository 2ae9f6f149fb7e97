"""Verified client tokens are remembered per process (by sha256) until they expire: a repeated token skips
the signature check, and nothing it would refuse is ever accepted from memory."""

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.test import Client, override_settings

from payments_project import auth
from tests.payments_project.auth_views import CALLS
from tests.support.auth import bearer

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.payments_project.auth_views")]

ALICE = uuid.UUID("0190c6a8-0000-7000-8000-00000000a11c")
ME = "/api/v1/test/me"


@pytest.fixture(autouse=True)
def _fresh_backend() -> Iterator[None]:
    auth._backend = None
    CALLS.clear()
    yield
    auth._backend = None


def _get(client: Client, authorization: str) -> Any:
    return client.get(ME, HTTP_AUTHORIZATION=authorization)


def _remembered() -> int:
    return len(auth.client_token_backend().verified)


def test_a_repeated_token_is_verified_once_and_answered_the_same(client: Client) -> None:
    authorization = bearer(ALICE, email="alice@example.com")

    first, second = _get(client, authorization), _get(client, authorization)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert _remembered() == 1


def test_a_remembered_token_is_refused_once_it_expires(client: Client) -> None:
    """Revocation by exp: memory never stretches a token's life, leeway included."""
    expires = int(time.time()) + 60  # travelled to from here, not from a later clock reading
    authorization = bearer(ALICE, exp=expires)
    assert _get(client, authorization).status_code == 200
    assert _remembered() == 1

    with override_settings(JWT_LEEWAY_SECONDS=30):
        auth._backend = None
        assert _get(client, authorization).status_code == 200
        with time_machine.travel(expires + 29, tick=False):
            assert _get(client, authorization).status_code == 200  # within the leeway, as PyJWT says
        with time_machine.travel(expires + 31, tick=False):
            response = _get(client, authorization)
    assert response.status_code == 401
    assert response.json()["status"] == 401
    assert CALLS["me"] == 3


def test_refused_tokens_are_not_remembered(client: Client) -> None:
    forged = bearer(ALICE)[:-4] + "AAAA"  # a broken signature
    expired = bearer(ALICE, exp=int(time.time()) - 3600)

    for _ in range(2):
        assert _get(client, forged).status_code == 401
        assert _get(client, expired).status_code == 401
    assert _remembered() == 0
    assert CALLS["me"] == 0


def test_a_new_key_forgets_the_tokens_verified_with_the_old_one(client: Client) -> None:
    authorization = bearer(ALICE)
    assert _get(client, authorization).status_code == 200

    with override_settings(JWT_SIGNING_KEY="another-signing-key-0123456789-0123456789-0123"):
        assert _get(client, authorization).status_code == 401


def test_memory_is_bounded_least_recently_used_first(client: Client) -> None:
    tokens = [bearer(uuid.uuid4()) for _ in range(5)]
    with override_settings(JWT_VERIFIED_TOKENS_CACHED=3):
        for authorization in tokens:
            assert _get(client, authorization).status_code == 200
        assert _remembered() == 3
        backend = auth.client_token_backend()
        assert backend.verified.get(auth.hashlib.sha256(tokens[0][7:].encode()).digest()) is None
        assert backend.verified.get(auth.hashlib.sha256(tokens[4][7:].encode()).digest()) is not None
