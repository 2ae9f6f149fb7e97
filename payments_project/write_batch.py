"""Rows written together at the end of a block of one transaction: a webhook drain's chunk appends the audit
events and outbox messages of its events in one INSERT each, not one (or two) per event, and updates
its subscriptions in one UPDATE.

Only what is written outside any savepoint opened inside the block waits: such a row rolls back only with
the whole transaction, and so does the batch. What is written inside a nested savepoint is written at once,
so a savepoint rolled back (a failing handler run on its own) takes its rows with it, as before.

A row someone may read back in the same transaction (an update of a row, not an append) waits only until
the connection runs its next statement, whoever runs it: every statement sees what was written before it,
as if nothing had waited; only the statements of consecutive writes become one.
"""

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

from django.db import transaction

Flush = Callable[[list[Any]], None]


class WriteBatchFailed(Exception):
    """Writing rows that waited for the next statement failed (raised `from` the database's error). The
    statement that sent them is not at fault: any of the writes that waited may be."""


class _Batch:
    def __init__(self, depth: int) -> None:
        self.depth = depth  # the savepoint stack's height where the block began
        self.rows: dict[Flush, list[Any]] = {}  # written at the end of the block
        self.before_next: dict[Flush, list[Any]] = {}  # written before the next statement
        self.keys: set[Hashable] = set()  # what the rows in before_next write

    def write_before_next(self) -> None:
        waiting, self.before_next = self.before_next, {}
        self.keys.clear()
        try:
            for flush, rows in waiting.items():
                flush(rows)
        except Exception as exc:
            raise WriteBatchFailed(f"writing {sum(map(len, waiting.values()))} deferred rows failed: {exc}") from exc


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
        with connection.execute_wrapper(partial(_written_first, batch)):
            yield
            batch.write_before_next()
    finally:
        _open.reset(token)
    for flush, rows in batch.rows.items():
        flush(rows)


def _written_first(batch: _Batch, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    """An execute wrapper: the rows waiting for the next statement go before it (and before a savepoint)."""
    if batch.before_next:
        batch.write_before_next()
    return execute(sql, params, many, context)


def defer(flush: Flush, row: Any, *, read_back: Hashable | None = None) -> bool:
    """Leave `row` for `flush(rows)` at the end of the open batch; False when it must be written now (no batch
    open, or a savepoint opened inside the batch is active: its rollback must take the row with it).

    `read_back`: the row changes what a statement may read in this transaction (this key names what it
    writes, e.g. a table's row): it is written before the connection's next statement instead, with the
    other such rows of the same `flush` deferred since the last statement. A second row of the same key
    writes the waiting ones first, so the two apply in order. A failure then raises WriteBatchFailed."""
    batch = _open.get()
    if batch is None:
        return False
    connection = transaction.get_connection()
    if not connection.in_atomic_block or any(connection.savepoint_ids[batch.depth :]):
        return False
    if read_back is None:
        batch.rows.setdefault(flush, []).append(row)
        return True
    if read_back in batch.keys:
        batch.write_before_next()
    batch.keys.add(read_back)
    batch.before_next.setdefault(flush, []).append(row)
    return True
