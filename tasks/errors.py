"""Errors that tell the reliable-execution layer whether to try again."""


class TransientError(Exception):
    """Worth retrying: a network error, a timeout, a 5xx or a 429 from a dependency."""


class OutboxError(Exception):
    """emit() was used wrongly (outside a transaction, or with data that is not JSON)."""
