"""Errors that tell the reliable-execution layer whether to try again, and the one test of it."""

import kombu.exceptions
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError

from payments_project.errors import DependencyUnavailable


class TransientError(Exception):
    """Worth retrying: a network error, a timeout, a 5xx or a 429 from a dependency."""


class NotYetKnown(TransientError):
    """What a job needs (a provider event's customer, its payment) has not landed yet. Retried like any
    transient error, and also as soon as the dependency lands (webhooks.services wakes the events waiting
    on their customer), so an out-of-order burst heals in moments, not at the next sweep.

    `customer_missing`: what is missing is the customer itself (not something of a known customer)."""

    def __init__(self, message: str, *, customer_missing: bool = False) -> None:
        super().__init__(message)
        self.customer_missing = customer_missing


class OutboxError(Exception):
    """emit() was used wrongly (outside a transaction, or with data that is not JSON)."""


class OutboxPublishFailed(Exception):
    """Some messages of a dispatch run were not published. Not transient on purpose: each message keeps its
    own backoff in the outbox, so the task is reported failed rather than retried."""


# Errors a later attempt may not meet: a dependency down, slow or saturated. Anything else is a bug or
# bad data, and retrying it only delays the failure.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    DependencyUnavailable,  # Stripe down, rate limited or not configured; a trust bundle not readable
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
    SoftTimeLimitExceeded,  # a run that took too long (a slow dependency): the next one may not
)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure may go away by itself, so the job or task is worth running again later."""
    return isinstance(exc, TRANSIENT_ERRORS)
