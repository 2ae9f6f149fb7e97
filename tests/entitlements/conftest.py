import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from entitlements.cache import _breaker
from payments_project.settings.base import cache_config
from tests.support.auth import SpiffePki, bearer

CALLER = "spiffe://jia.test/ns/catalog/sa/catalog"
STRANGER = "spiffe://jia.test/ns/other/sa/other"


def cache_at(url: str, **options: Any) -> dict[str, Any]:
    """CACHES for another Redis URL, keeping the test key prefix (so a worker sees the same keys)."""
    config = cache_config(url)
    config["default"]["KEY_PREFIX"] = settings.CACHES["default"]["KEY_PREFIX"]
    config["default"]["OPTIONS"].update(options)
    return config


class CountingConnectionPool(redis.ConnectionPool):
    """redis-py's pool, counting checkouts: one per command or pipeline, i.e. one per round trip."""

    checkouts = 0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        type(self).checkouts += 1
        return super().get_connection(*args, **kwargs)


@pytest.fixture
def round_trips() -> Iterator[type[CountingConnectionPool]]:
    """The default cache on the test Redis, counting round trips (`round_trips.checkouts`)."""
    CountingConnectionPool.checkouts = 0
    with override_settings(CACHES=cache_at(settings.REDIS_URL, pool_class=CountingConnectionPool)):
        yield CountingConnectionPool


@pytest.fixture(autouse=True)
def _closed_breaker() -> None:
    _breaker.reset()


@pytest.fixture(scope="session")
def pki() -> SpiffePki:
    return SpiffePki("jia.test")


@pytest.fixture
def service(pki: SpiffePki, tmp_path: Path) -> Iterator[dict[str, str]]:
    """/internal/ open to CALLER: the test client kwargs carrying its certificate."""
    with override_settings(
        SERVICE_AUTH_MODE="xfcc",
        SPIFFE_TRUST_BUNDLE=str(pki.write_bundle(tmp_path)),
        SPIFFE_TRUST_DOMAIN="jia.test",
        SERVICE_ALLOWLIST={"entitlements.read": [CALLER]},
    ):
        yield {"HTTP_X_FORWARDED_CLIENT_CERT": pki.xfcc(pki.leaf(CALLER))}


def as_user(user_id: uuid.UUID, email: str = "", *, email_verified: bool = True) -> dict[str, str]:
    """A signed-in user whose identity provider vouches for their address (as most do)."""
    claims = {"email_verified": True} if email and email_verified else {}
    return {"HTTP_AUTHORIZATION": bearer(user_id, email=email, **claims)}
