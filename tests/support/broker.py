"""A real consumer queue bound to the domain-events exchange, as another service would have."""

import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
from django.conf import settings


class EventsConsumer:
    def __init__(self, binding_key: str = "#") -> None:
        self.connection = kombu.Connection(settings.CELERY_BROKER_URL)
        exchange = kombu.Exchange(settings.OUTBOX_EXCHANGE, type="topic", durable=True)
        self.queue = kombu.Queue(
            f"test-events-{uuid.uuid4().hex}", exchange, routing_key=binding_key, exclusive=True, auto_delete=True
        )
        self.queue(self.connection.default_channel).declare()
        self.received: list[kombu.Message] = []

    def drain(self, *, expect: int, timeout: float = 10.0, settle: float = 0.5) -> list[kombu.Message]:
        """Collect messages until `expect` arrived (then `settle` more seconds for extras) or timeout."""
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        bound = self.queue(self.connection.default_channel)
        while time.monotonic() < (settle_until or deadline):
            message = bound.get(no_ack=True)
            if message is None:
                time.sleep(0.05)
            else:
                self.received.append(message)
            if settle_until is None and len(self.received) >= expect:
                settle_until = time.monotonic() + settle
        return self.received

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(message.body) for message in self.received]

    def close(self) -> None:
        self.connection.release()


def broker_url_through(port: int) -> str:
    """The configured broker URL (credentials, vhost) with its address replaced by a local proxy's."""
    url = urlsplit(settings.CELERY_BROKER_URL)
    credentials = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
    return urlunsplit(url._replace(netloc=f"{credentials}127.0.0.1:{port}"))
