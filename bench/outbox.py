"""Outbox benchmark (`python -m bench outbox`; issue 17, target 5).

Messages/s the outbox dispatcher publishes (`outbox_dispatch_pending`, in this process: claim a batch of
due rows, publish it, wait for the broker's confirms once, mark the batch), from MESSAGES pending rows of
distinct subjects until none is left, beside the physical baseline measured in the same run: the same
messages published one at a time with publisher confirms (kombu with `confirm_publish`, each publish
waiting for its confirm, no database). Both go to the events exchange with one durable queue bound to it,
as a consumer service would have, so the broker persists each message either way.
"""

import json
import time
import uuid
from typing import Any

from bench.results import Context, Row, at_least, benchmark

MESSAGES = 2000
QUEUE = "bench-outbox-consumer"


def _consumer_queue() -> Any:
    import kombu
    from django.conf import settings

    exchange = kombu.Exchange(settings.OUTBOX_EXCHANGE, type="topic", durable=True)
    return kombu.Queue(QUEUE, exchange, routing_key="#", durable=True)


def _purge(queue: Any) -> None:
    import kombu
    from django.conf import settings

    with kombu.Connection(settings.CELERY_BROKER_URL) as connection:
        bound = queue(connection.default_channel)
        bound.declare()
        bound.purge()


def _one_at_a_time(messages: int) -> dict[str, Any]:
    import kombu
    from django.conf import settings

    body = json.dumps({"specversion": "1.0", "type": "subscription.activated", "data": {"plan": "family"}}).encode()
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "confirm_publish": True}
    with kombu.Connection(settings.CELERY_BROKER_URL, transport_options=options) as connection:
        producer = connection.Producer()
        exchange = kombu.Exchange(settings.OUTBOX_EXCHANGE, type="topic", durable=True)
        started = time.perf_counter()
        for _ in range(messages):
            producer.publish(
                body,
                exchange=exchange,
                routing_key="subscription.activated",
                delivery_mode=2,
                content_type="application/cloudevents+json",
                content_encoding="utf-8",
                message_id=str(uuid.uuid4()),
                retry=False,
            )
        seconds = time.perf_counter() - started
    return {
        "name": "one-at-a-time confirmed publish",
        "messages": messages,
        "seconds": seconds,
        "rate": messages / seconds,
    }


def _dispatch(messages: int) -> dict[str, Any]:
    from django.db import transaction

    from tasks.models import OutboxMessage
    from tasks.outbox import outbox_dispatch_pending

    OutboxMessage.objects.all().delete()
    tag = uuid.uuid4().hex[:8]
    with transaction.atomic():
        OutboxMessage.objects.bulk_create(
            OutboxMessage(type="subscription.activated", subject=f"subscription:{tag}:{n}", data={"plan": "family"})
            for n in range(messages)
        )
    started = time.perf_counter()
    published = 0
    while published < messages:
        sent = outbox_dispatch_pending()
        if sent == 0:
            raise RuntimeError(f"the dispatcher stopped after {published} of {messages} messages")
        published += sent
    seconds = time.perf_counter() - started
    return {"name": "outbox dispatch", "messages": messages, "seconds": seconds, "rate": messages / seconds}


@benchmark("outbox")
def run(ctx: Context) -> list[Row]:
    queue = _consumer_queue()
    _purge(queue)
    _one_at_a_time(100)  # warm-up: connections, exchange
    base = _one_at_a_time(MESSAGES)
    ctx.progress(f"  one at a time: {MESSAGES} in {base['seconds']:.2f} s = {base['rate']:.0f} messages/s")
    _purge(queue)
    dispatched = _dispatch(MESSAGES)
    ctx.progress(
        f"  outbox dispatch: {MESSAGES} in {dispatched['seconds']:.2f} s = {dispatched['rate']:.0f} messages/s"
    )
    _purge(queue)
    return [
        Row(
            "outbox",
            "outbox dispatch (pending → published)",
            dispatched["rate"],
            "messages/s",
            baseline="one-at-a-time confirmed publish",
            baseline_value=base["rate"],
            target=at_least(1.0),
            note=f"{MESSAGES} messages of distinct subjects, batches of the dispatcher's OUTBOX_BATCH_SIZE",
            measurement=dispatched,
            baseline_measurement=base,
        )
    ]
