"""Races between real threads: the proof of a concurrency claim (a unique constraint, a claim, a lock)."""

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def race(*calls: Callable[[], Any], timeout: float = 120) -> list[Any]:
    """Run each call in its own thread, all released together by a barrier, and wait for them.

    Django gives each thread its own database connection, so each call is its own session; the thread
    closes it when done (a connection left open would block the test database's teardown). Returns what
    each call returned, in order, or the exception it raised in its place (see `raised`).
    """
    barrier = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=timeout)
            outcomes[index] = call()
        except BaseException as exc:  # handed to the test, which decides
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call), name=f"race-{i}") for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"a racer was still running after {timeout} s")
    return outcomes


def raised(outcomes: list[Any]) -> list[BaseException]:
    """The exceptions among a race's outcomes (`assert raised(race(...)) == []`)."""
    return [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
