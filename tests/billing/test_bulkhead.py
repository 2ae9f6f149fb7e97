"""The Stripe bulkhead of a web process: with no permit free, a request waits for one only while Stripe
answers fast; a slow or hung Stripe turns it away at once (the web tier keeps its other threads:
tests/billing/checkout/test_slow_stripe.py)."""

import threading
import time

from billing.gateway import _Bulkhead

FAST = 30.0  # a wait no call in these tests comes near: every call they make is "fast"
SHORT = 0.05


def call(bulkhead: _Bulkhead, *, wait: float, lasting: float = 0.0) -> None:
    """A Stripe call that takes a permit and ends after `lasting` seconds."""
    permit = bulkhead.acquire(wait=wait)
    assert permit is not None
    time.sleep(lasting)
    bulkhead.release(permit)


def test_with_stripe_answering_fast_a_request_gets_the_next_free_permit_instead_of_a_503() -> None:
    bulkhead = _Bulkhead(1)
    call(bulkhead, wait=FAST)  # a call that ended at once
    held = bulkhead.acquire(wait=FAST)
    assert held is not None
    got: list[float | None] = []
    waiter = threading.Thread(target=lambda: got.append(bulkhead.acquire(wait=FAST)))
    waiter.start()
    bulkhead.release(held)  # the call in progress ends
    waiter.join()
    assert got[0] is not None


def test_before_any_call_has_ended_a_request_without_a_permit_is_turned_away_at_once() -> None:
    bulkhead = _Bulkhead(1)
    assert bulkhead.acquire(wait=FAST) is not None
    assert bulkhead.acquire(wait=FAST) is None


def test_after_a_slow_call_a_request_without_a_permit_is_turned_away_at_once() -> None:
    bulkhead = _Bulkhead(1)
    call(bulkhead, wait=SHORT, lasting=SHORT)  # Stripe is slow
    assert bulkhead.acquire(wait=SHORT) is not None
    assert bulkhead.acquire(wait=SHORT) is None


def test_while_the_call_holding_the_permit_runs_long_a_request_is_turned_away_at_once() -> None:
    bulkhead = _Bulkhead(1)
    call(bulkhead, wait=SHORT)  # the last call was fast...
    assert bulkhead.acquire(wait=SHORT) is not None
    time.sleep(SHORT)  # ...but this one has run SHORT already: Stripe has become slow
    assert bulkhead.acquire(wait=SHORT) is None
