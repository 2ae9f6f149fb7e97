"""Rows written together at the end of a block of one transaction: a webhook drain's chunk appends the audit
events and outbox messages of its twenty events in one INSERT each, not one (or two) per event.

Only what is written outside any savepoint opened inside the block waits: such a row rolls back only with
the whole transaction, and so does the batch. What is written inside a nested savepoint is written at once,
so a savepoint rolled back (a failing handler run on its own) takes its rows with it, as before.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import transaction

Flush = Callable[[list[Any]], None]


class _Batch:
    def __init__(self, depth: int) -> None:
        self.depth = depth  # the savepoint stack's height where the block began
        self.rows: dict[Flush, list[Any]] = {}


_open: ContextVar[_Batch | None] = ContextVar("write_batch", default=None)


@contextmanager
def write_batch() -> Iterator[None]:
    """Inside a transaction: rows deferred in this block (`defer`) are written when it ends without an error,
    still inside the transaction; an error drops them (the transaction rolls back anyway)."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("write_batch() must run inside a transaction")
    batch = _Batch(len(connection.savepoint_ids))
    token = _open.set(batch)
    try:
        yield
    finally:
        _open.reset(token)
    for flush, rows in batch.rows.items():
        flush(rows)


def defer(flush: Flush, row: Any) -> bool:
    """Leave `row` for `flush(rows)` at the end of the open batch; False when it must be written now (no batch
    open, or a savepoint opened inside the batch is active: its rollback must take the row with it)."""
    batch = _open.get()
    if batch is None:
        return False
    connection = transaction.get_connection()
    if not connection.in_atomic_block or any(connection.savepoint_ids[batch.depth :]):
        return False
    batch.rows.setdefault(flush, []).append(row)
    return True
