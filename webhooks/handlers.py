"""The handler registry: one function per provider event type.

A handler takes the event's object (`event["data"]["object"]`) and the event's creation time, calls
domain services inside the processor's transaction, and returns the ids of the users whose billing
state changed (their entitlements are refreshed in the same transaction). Handlers are idempotent:
the processor may run one twice (replay, redelivery), and the services ignore stale versions.
"""

import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

Handler = Callable[[Mapping[str, Any], datetime], set[uuid.UUID]]
# Given events' objects and times (a drain's events of one type, at most one per object), return for each
# the object as the provider has it now (and the time it was fetched) when the event alone cannot decide
# the order of changes; None when it can; the exception when fetching it failed. Runs outside any
# transaction, since it may call the provider; one call for many events, so what it reads costs one query.
Refetched = tuple[Mapping[str, Any], datetime] | None | Exception
Refetch = Callable[[Sequence[tuple[Mapping[str, Any], datetime]]], list[Refetched]]

# Given a drain chunk's objects of one type (at most one event per object and per customer), a block inside
# which their handlers find the rows they lock already locked: all of them in one statement, in a documented
# order, in the chunk's transaction, where each handler would have taken one statement of its own.
LockAhead = Callable[[Sequence[Mapping[str, Any]]], AbstractContextManager[None]]

HANDLERS: dict[str, Handler] = {}
REFETCHERS: dict[str, Refetch] = {}
LOCKS_AHEAD: dict[str, LockAhead] = {}


def handles(
    *event_types: str, refetch: Refetch | None = None, lock_ahead: LockAhead | None = None
) -> Callable[[Handler], Handler]:
    """Register a handler for one or more event types (older API versions' names included)."""

    def register(handler: Handler) -> Handler:
        for event_type in event_types:
            if event_type in HANDLERS:
                raise ValueError(f"{event_type} already has a handler: {HANDLERS[event_type].__name__}")
            HANDLERS[event_type] = handler
            if refetch is not None:
                REFETCHERS[event_type] = refetch
            if lock_ahead is not None:
                LOCKS_AHEAD[event_type] = lock_ahead
        return handler

    return register
