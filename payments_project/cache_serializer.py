"""What Django's Redis cache stores: JSON, never pickles.

Django's own RedisSerializer unpickles whatever it reads, and the same Redis holds rate limits and the
circuit breaker's state for every process: anyone who can write to Redis could run code in ours. JSON
cannot carry code. Integers stay raw Redis integers (as Django's serializer keeps them) so INCR still
works for the rate-limit counters; anything else is a JSON document. A value that is neither (a pickle
someone planted, bytes from another program) is refused with UnreadableCacheValue — callers treat a
cache error as a miss (the entitlement cache answers from the database, rate limits fail open, /readyz
reports the cache down), and nothing is ever executed. The entitlement cache reads each value on its
own: an unreadable one is a miss for that user only.

JSON has no tuples, sets or datetimes: a tuple comes back as a list, and values that JSON cannot hold are
refused when written (TypeError). The entitlement cache stores plain lists and integers for that reason.
"""

import json
from typing import Any

from redis.exceptions import DataError


class UnreadableCacheValue(DataError, ValueError):
    """A cache value that is not one this serializer wrote: never decoded further. A RedisError, so
    every caller that survives a Redis failure (rate limits, the entitlement cache) survives this too."""


class JsonSerializer:
    """CACHES[...]["OPTIONS"]["serializer"] for django.core.cache.backends.redis.RedisCache."""

    def dumps(self, obj: Any) -> bytes | int:
        if type(obj) is int:  # not bool: True must come back as True
            return obj
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes | str | int) -> Any:
        if isinstance(data, int):
            return data
        try:
            return int(data)
        except ValueError:
            pass
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise UnreadableCacheValue("the cache holds a value that is not JSON; ignored") from exc
