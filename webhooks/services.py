"""The inbox pipeline: receive (store once, enqueue on commit), process (claim, handle, record), sweep."""

import functools
import json
import uuid
from collections import defaultdict
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone
from uuid6 import uuid7

from billing.models import Customer
from entitlements.services import entitlements_refresh
from gdpr import audit
from gdpr.selectors import completed_erasures
from payments_project.db_cursors import server_binding_cursor
from payments_project.json_body import json_loads
from payments_project.tracing import current_traceparent, job_span
from payments_project.write_batch import WriteBatchFailed, write_batch
from tasks.base import enqueue_on_commit
from tasks.errors import NotYetKnown, is_transient
from tasks.jobs import claim_batch, claim_returning, due, outcome_fields, record_failure
from webhooks import metrics
from webhooks.errors import WebhookRejected
from webhooks.handlers import HANDLERS, LOCKS_AHEAD, REFETCHERS, LockAhead
from webhooks.models import WebhookEvent

log = structlog.get_logger(__name__)

Status = WebhookEvent.Status


@dataclass(frozen=True)
class StripeEnvelope:
    """What the inbox records about an event besides its raw body."""

    event_id: str
    type: str
    object_id: str
    customer_id: str
    livemode: bool
    api_version: str
    created: datetime
    object_kind: str = ""  # data.object.object: "subscription", "customer", ...
    user_ids: tuple[str, ...] = ()  # metadata.user_id of the object and of its (expanded) customer


def stripe_event_parse(raw_body: bytes) -> StripeEnvelope:
    """Read the envelope of a Stripe event; anything we could not process later is rejected now."""
    try:
        event = json_loads(raw_body)  # bounded depth: a deeply nested body is malformed, never a 500
        obj = event["data"]["object"]
        if not isinstance(obj, dict):
            raise TypeError("data.object is not an object")
        customer = obj.get("customer") if obj.get("object") != "customer" else obj.get("id")
        return StripeEnvelope(
            event_id=_non_empty_str(event["id"]),
            type=_non_empty_str(event["type"]),
            object_id=str(obj.get("id") or ""),
            customer_id=str((customer.get("id") if isinstance(customer, dict) else customer) or ""),
            livemode=bool(event.get("livemode", False)),
            api_version=str(event.get("api_version") or ""),
            created=datetime.fromtimestamp(int(event["created"]), tz=UTC),
            object_kind=str(obj.get("object") or ""),
            user_ids=_metadata_user_ids(obj),
        )
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise WebhookRejected(f"The body is not a Stripe event: {exc}", reason="malformed") from exc


def _non_empty_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def webhook_event_receive(*, envelope: StripeEnvelope, raw_body: str) -> bool:
    """Store a delivered event once and enqueue its processing once it is committed; returns whether it
    was a duplicate. One autocommit statement (see inbox_insert): no BEGIN/COMMIT round trips around it.
    In a caller's transaction (none in production: no ATOMIC_REQUESTS), it is part of that one."""
    return inbox_insert(envelope=envelope, raw_body=raw_body)


def inbox_insert(*, envelope: StripeEnvelope, raw_body: str) -> bool:
    """Insert an event into the inbox unless it is there (unique on provider + event id), in the caller's
    transaction if there is one, and enqueue its processing on commit. Webhook deliveries and the
    reconciliation's gap-filling both come in here, so an event is processed once whichever way it came.

    Returns whether it was already there. One statement, `INSERT … ON CONFLICT DO NOTHING RETURNING status`:
    a row comes back only if this insert won.
    """
    now = timezone.now()
    ours_to_process = envelope.livemode == settings.STRIPE_LIVEMODE
    status = Status.RECEIVED if ours_to_process else Status.IGNORED
    # Every column, as the database takes it (no model instance: building one and preparing each field's
    # value cost a tenth of a delivery's CPU, issue 17); _inbox_insert_sql checks they are the model's.
    row: dict[str, Any] = {
        "id": uuid7(),
        "provider": WebhookEvent.Provider.STRIPE.value,
        "event_id": envelope.event_id,
        "type": envelope.type,
        "object_id": envelope.object_id,
        "customer_id": envelope.customer_id,
        "livemode": envelope.livemode,
        "api_version": envelope.api_version,
        "provider_created_at": envelope.created,
        "raw_body": raw_body,
        "status": status.value,
        "attempts": 0,
        # The sweeper leaves a fresh event to the worker the commit nudges, for a grace period.
        "next_attempt_at": now + timedelta(seconds=settings.WEBHOOK_PICKUP_GRACE_SECONDS),
        "last_error": "" if ours_to_process else "livemode differs from this deployment's",
        "received_at": now,
        "processed_at": None,
        "lease_until": None,
        "traceparent": current_traceparent(),
        "waiting_on": "",
    }
    # Stripe still writes about a customer we erased (customer.deleted, customer.subscription.deleted after
    # erasure deleted them): nothing left to apply, and its personal data is never stored (#14). Decided
    # by the insert itself, so a new delivery stays one statement, one round trip.
    erased = _erased_subject_condition(envelope)
    instead = (
        {
            "raw_body": _redacted_body(
                reason="erased_subject",
                event_id=envelope.event_id,
                type=envelope.type,
                created=envelope.created,
                livemode=envelope.livemode,
                api_version=envelope.api_version,
                object_id=envelope.object_id,
                kind=envelope.object_kind,
            ),
            "customer_id": "",
            "status": Status.IGNORED.value,
            "last_error": "about an erased data subject",
        }
        if erased
        else {}
    )
    connection = transaction.get_connection()
    sql = _inbox_insert_sql(connection.vendor, tuple(row), erased[0] if erased else None, tuple(instead))
    if connection.vendor != "postgresql":  # psycopg adapts UUIDs and datetimes; sqlite3 takes what the fields write
        fields = {field.attname: field for field in WebhookEvent._meta.local_concrete_fields}
        row = {column: fields[column].get_db_prep_save(value, connection) for column, value in row.items()}
    values = list(erased[1]) if erased else []
    for column, value in row.items():
        if column in instead:
            values.append(instead[column])
        values.append(value)
    with server_binding_cursor(connection) as cursor:
        cursor.execute(sql, values)
        inserted = cursor.fetchone()
    stored = None if inserted is None else str(inserted[0])
    metrics.EVENTS_RECEIVED.labels(envelope.type, "duplicate" if stored is None else "new").inc()
    if stored == Status.RECEIVED:
        _enqueue_processing()
    return stored is None


@functools.lru_cache(maxsize=64)
def _inbox_insert_sql(vendor: str, attnames: tuple[str, ...], erased: str | None, instead: tuple[str, ...]) -> str:
    """`INSERT … ON CONFLICT (provider, event_id) DO NOTHING RETURNING status` of a row with these columns
    (attribute names: every concrete field of WebhookEvent, checked) whose parameters come in that order.
    With the SQL condition `erased` (its parameters first), the columns in `instead` take two parameters
    each, the first stored when the condition holds. The text is remembered: it is the same for
    almost every delivery, and each connection prepares it once (server_binding_cursor)."""
    fields = {field.attname: field for field in WebhookEvent._meta.local_concrete_fields}
    if sorted(attnames) != sorted(fields):
        raise ImproperlyConfigured(f"inbox_insert writes {sorted(attnames)}, WebhookEvent has {sorted(fields)}")
    quote = transaction.get_connection().ops.quote_name  # `vendor` keys the cache: quoting is the vendor's
    columns = ", ".join(quote(fields[name].column) for name in attnames)
    placeholders = ", ".join(
        "CASE WHEN (SELECT yes FROM erased) THEN %s ELSE %s END" if name in instead else "%s" for name in attnames
    )
    prefix = f"WITH erased AS (SELECT ({erased}) AS yes) " if erased else ""
    # Identifiers come from the model; every value is a parameter.
    return (
        f"{prefix}INSERT INTO {quote(WebhookEvent._meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        "ON CONFLICT (provider, event_id) DO NOTHING RETURNING status"
    )


def _erased_subject_condition(envelope: StripeEnvelope) -> tuple[str, list[Any]] | None:
    """SQL (and its parameters) true when the event is about a customer an erasure pseudonymised, or names
    (metadata.user_id) a user whose erasure completed; None when it names no one."""
    conditions, params = [], []
    if envelope.customer_id:
        conditions.append(_erased_customer_sql(transaction.get_connection().vendor))
        params.append(envelope.customer_id)
    if (erasures := completed_erasures(envelope.user_ids)) is not None:  # rare: only our checkout's objects
        sql, erasure_params = erasures.values("pk").query.sql_with_params()
        conditions.append(f"EXISTS ({sql})")
        params += erasure_params
    return (" OR ".join(conditions), params) if conditions else None


@functools.cache
def _erased_customer_sql(vendor: str) -> str:
    """SQL true when the customer (one parameter: its Stripe id) was erased. Made once: it was a fiftieth of
    a delivery's Python time. `vendor` keys it: quoting is the vendor's."""
    quote, meta = transaction.get_connection().ops.quote_name, Customer._meta
    return (
        f"EXISTS (SELECT 1 FROM {quote(meta.db_table)} WHERE {quote(meta.get_field('stripe_customer_id').column)}"  # noqa: S608
        f" = %s AND {quote(meta.get_field('erased_at').column)} IS NOT NULL)"
    )


def _metadata_user_ids(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """metadata.user_id of the event's object and of its (expanded) customer."""
    found = []
    for holder in (obj, obj.get("customer")):
        metadata = holder.get("metadata") if isinstance(holder, dict) else None
        if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
            found.append(metadata["user_id"])
    return tuple(found)


def _enqueue_processing() -> None:
    """Nudge a drain once the event is committed. The nudge names no event: the drain takes every waiting
    one, so the nudges of a burst coalesce into a few messages (tasks.base._Publisher), not one per event."""
    from webhooks.tasks import webhook_events_drain_task  # imported here: the task module imports this one

    enqueue_on_commit(webhook_events_drain_task)


# Events claimed per statement (and per claim commit) by a drain, and batches per drain run: a run stays
# seconds long, far inside its time limit, and leaves the rest to the next run. A batch's claim, chunk locks,
# entitlement refresh and audit/outbox/update statements are paid once for all its events: 50 rather than 20
# took end to end from ~0.29x to ~0.36x of a no-op task's rate (bench webhooks, 3 runs each); a chunk's
# locks are held ~50 ms longer.
DRAIN_BATCH = 50
DRAIN_MAX_BATCHES = 10


def webhook_events_drain(*, reclaim: bool = False) -> int:
    """Process the events waiting in the inbox (received, or failed and due), oldest first, in batches:
    each batch is claimed in one statement (`tasks.jobs.claim_batch`: attempts counted, leases set, one
    commit), then run in order in as few transactions as it can (_run_chunk: each event in a savepoint of
    its own, one commit for many). Returns how many events it ran.

    `reclaim`: also take back events claimed but not being run (not row-locked): a redelivered drain's
    worker died mid-batch, and what it claimed need not wait for its lease (if that drain was alive after all,
    whichever of the two reaches an event first runs it and the other walks away; its attempt is counted twice).

    A run whose first claim is a full batch nudges one more drain at once: a backlog woken by one nudge (the
    sweeper's, a reconciliation's commit) is shared by every idle worker process, not run by one while the
    others wait for its next nudge. The extra run takes what is left unclaimed, or nothing.
    """
    ran = 0
    for n in range(DRAIN_MAX_BATCHES):
        claimed = claim_batch(
            _WAITING, ("pk", *_CLAIM_FIELDS), limit=DRAIN_BATCH, order_by="next_attempt_at", reclaim_running=reclaim
        )
        reclaim = False
        if n == 0 and len(claimed) == DRAIN_BATCH:
            _enqueue_processing()  # outside any transaction: handed to the publisher thread now
        waiting = [(row.pop("pk"), row) for row in claimed]
        wake: set[str] = set()
        running: list[uuid.UUID] = []  # the event a chunk was running when it stopped: it keeps its lease
        try:
            while waiting:
                chunk = _chunk(waiting)
                outcomes = _run_chunk(chunk, running=running)
                del waiting[: len(chunk)]
                wake.update(waking for _, waking in outcomes if waking)
                ran += sum(status is not None for status, _ in outcomes)
        finally:
            # Stopped mid-batch (a time limit, a lost database): what did not commit waits for the next run.
            if unstarted := [event_id for event_id, _ in waiting if event_id not in running]:
                _release(unstarted)
            _wake_waiting_on(wake)  # what the events that did run let go
        if len(claimed) < DRAIN_BATCH:
            return ran
    _enqueue_processing()  # more waiting than one run takes: the next run goes on
    return ran


# What a drain takes: fresh events whatever their pickup grace (which only keeps the sweeper off them),
# failed ones whose backoff has passed, and claimed ones whose worker's lease ran out (claim_batch decides).
_WAITING = WebhookEvent.objects.filter(
    Q(status__in=[Status.RECEIVED, Status.PROCESSING]) | Q(status=Status.FAILED, next_attempt_at__lte=Now())
)

Claimed = tuple[uuid.UUID, dict[str, Any]]  # an event's id and its _CLAIM_FIELDS, as the claim read them


def _chunk(claimed: list[Claimed]) -> list[Claimed]:
    """The longest run of claimed events, from the first, that share one transaction: no two about the same
    customer or object. So each event's payload, read before the transaction (a refetch compares it with
    our row), is what it would be had the events before it committed alone, and the events of one customer
    keep their order and see each other's effects as before."""
    seen: set[str] = set()
    for n, (_, fields) in enumerate(claimed):
        keys = {key for key in (f"c:{fields['customer_id']}", f"o:{fields['object_id']}") if len(key) > 2}
        if n and keys & seen:
            return claimed[:n]
        seen |= keys
    return claimed


class _Rerun(Exception):
    """A chunk's run met a failure it cannot isolate: the chunk rolls back and runs again, more carefully.
    `failed`: the event whose handler failed, and how (None: the shared entitlement refresh failed, or
    writing what the handlers left for the end of the chunk or for the next statement did)."""

    def __init__(self, failed: tuple[uuid.UUID, Exception] | None) -> None:
        super().__init__("a handler failed" if failed else "the shared refresh or the batched writes failed")
        self.failed = failed


# (new status or None when it was not ours to run, the customer whose waiting events may go now or "")
Outcome = tuple[str | None, str]


def _run_chunk(chunk: list[Claimed], *, running: list[uuid.UUID]) -> list[Outcome]:
    """Run claimed events in one transaction: each under its row lock, its handler's writes made; then every
    event's outcome is saved and the entitlements of every user they changed are refreshed, at once, and all
    of it commits together.

    A failure never costs another event its writes: when a handler fails, the chunk rolls back and runs
    again with each handler in a savepoint of its own (a failing one rolls back only its own writes, and its
    failure is recorded); when the shared refresh fails, it runs again with each event refreshing its own
    users in its savepoint too, so one user's failing refresh fails only the event that changed them. A
    failed handler is not run again: its failure is recorded as it happened. Most chunks fail nothing, and
    pay for no savepoint. `running` names the event being run (or the events whose
    payloads are being fetched) when an exception ends the chunk."""
    running[:] = [event_id for event_id, _ in chunk]
    payloads = _payloads([fields for _, fields in chunk])  # before the transaction: it may ask Stripe
    isolate, refresh_together = False, True
    while True:  # at most three runs: the second isolates each handler, the third each refresh too
        try:
            applied = _apply_chunk(chunk, payloads, running=running, isolate=isolate, refresh_together=refresh_together)
            break
        except _Rerun as rerun:
            log.info("webhook_events_chunk_rerun", events=len(chunk), reason=str(rerun))
            if rerun.failed is None:
                refresh_together = False
            else:  # its failure stands in for its payload: recorded, not run again
                failed_id, exc = rerun.failed
                payloads = [
                    (exc, trace) if event_id == failed_id else (payload, trace)
                    for (event_id, _), (payload, trace) in zip(chunk, payloads, strict=True)
                ]
            isolate = True
    running.clear()
    # Committed. Whatever an applied event changed, or merely linked (a customer.created naming a user we
    # know), its customer's waiting events may go now: one lookup in a partial index, mostly empty. An event
    # that found its customer missing looks once more, now that its waiting is committed: either it sees
    # the customer, or the event bringing it commits later and then finds it waiting. No wake-up is lost.
    outcomes: list[Outcome] = []
    for event, customer_missing in applied:
        if event is None:
            outcomes.append((None, ""))
            continue
        log.info("webhook_event_processed", event_id=event.event_id, type=event.type, status=event.status)
        wakes = event.customer_id and (
            event.status == Status.PROCESSED
            or (customer_missing and Customer.objects.filter(stripe_customer_id=event.customer_id).exists())
        )
        outcomes.append((event.status, event.customer_id if wakes else ""))
    return outcomes


def _apply_chunk(
    chunk: list[Claimed],
    payloads: list[tuple["Payload", dict[str, Any]]],
    *,
    running: list[uuid.UUID],
    isolate: bool,
    refresh_together: bool,
) -> list[tuple[WebhookEvent | None, bool]]:
    """_run_chunk's transaction (see there for `isolate` and `refresh_together`); for each event, its row as
    saved (None: not ours to run) and whether it failed for want of its customer. Raises _Rerun."""
    applied: list[tuple[WebhookEvent | None, bool]] = []
    # The users the chunk's events changed, each with the trace of the span that ran its event: refreshed
    # together, their entitlements.changed events still continue those traces.
    changed_users: dict[uuid.UUID, str] = {}
    with transaction.atomic(durable=True):
        written = False
        try:
            # The audit events and outbox messages the chunk's handlers and refresh write outside a savepoint
            # go in one INSERT each when the chunk's work is done, in its transaction.
            with write_batch(), ExitStack() as ahead:
                locked = _lock_chunk([event_id for event_id, _ in chunk], running=running)
                if not isolate:  # a rerun leaves each handler to lock its rows in its savepoint: a failure is its own
                    try:
                        _lock_ahead(
                            ahead,
                            [
                                (locked.get(event_id), payload)
                                for (event_id, _), (payload, _) in zip(chunk, payloads, strict=True)
                            ],
                        )
                    except Exception as exc:
                        log.warning("webhook_events_lock_ahead_failed", events=len(chunk), error=repr(exc))
                        raise _Rerun(None) from exc
                for (event_id, _), (payload, trace) in zip(chunk, payloads, strict=True):
                    event = locked.get(event_id)
                    if event is None:
                        applied.append((None, False))
                        continue
                    running[:] = [event_id]
                    with job_span("webhook.process", **trace) as span:
                        span.set_attributes({"jia.webhook.event_id": event.event_id, "jia.webhook.type": event.type})
                        customer_missing, users = _run_handler(
                            event, payload, isolate=isolate, refresh=isolate and not refresh_together
                        )
                        span.set_attributes({"jia.webhook.status": event.status, "jia.webhook.attempt": event.attempts})
                        if users:
                            changed_users |= dict.fromkeys(users - changed_users.keys(), current_traceparent())
                    applied.append((event, customer_missing))
                    transaction.on_commit(partial(_count, event.type, event.status, event.received_at))
                running.clear()
                _save_outcomes([event for event, _ in applied if event is not None])
                if changed_users and refresh_together:
                    try:
                        # a billing change reaches the apps above billing
                        entitlements_refresh(user_ids=set(changed_users), traceparents=changed_users)
                    except Exception as exc:
                        log.warning("webhook_events_refresh_together_failed", users=len(changed_users), error=repr(exc))
                        raise _Rerun(None) from exc
                written = True
        except _Rerun:
            raise
        except Exception as exc:
            if not written and not isinstance(exc, WriteBatchFailed):
                raise
            # Writing the batch failed: run again with every event's writes in its own savepoint, so that
            # whatever failed fails only its event.
            log.warning("webhook_events_batch_write_failed", events=len(chunk), error=repr(exc))
            raise _Rerun(None) from exc
    return applied


def _lock_chunk(event_ids: list[uuid.UUID], *, running: list[uuid.UUID]) -> dict[uuid.UUID, WebhookEvent]:
    """Lock a chunk's claimed events in one statement, in id order (the lock order: two runs holding
    events of one chunk never wait on each other in a cycle), and read them; those no longer `processing`
    are left out (not ours to run).

    It waits for each row lock, never skips one: a claim or sweep statement racing ours may hold it for a
    moment (PostgreSQL keeps the lock of a row whose re-check failed until that statement commits), and
    skipping would strand the event until its lease ran out. Whoever runs an event first leaves it not
    `processing`, so a second run (a reclaimed or redelivered one) waits, then walks away."""
    running[:] = event_ids
    rows = (
        WebhookEvent.objects.select_for_update()
        .filter(id__in=event_ids, status=Status.PROCESSING)
        .defer("raw_body")  # read with the claim
        .order_by("id")
    )
    return {event.id: event for event in rows}


def _lock_ahead(stack: ExitStack, events: list[tuple[WebhookEvent | None, "Payload"]]) -> None:
    """Enter, on `stack`, the lock-ahead block of each handler that has one (webhooks.handlers.LOCKS_AHEAD)
    with the objects of the chunk's events it will handle: what their handlers would lock one statement each
    is locked in one."""
    objects: dict[LockAhead, list[Mapping[str, Any]]] = defaultdict(list)
    for event, payload in events:
        if event is not None and not isinstance(payload, Exception) and (lock := LOCKS_AHEAD.get(event.type)):
            objects[lock].append(payload[0])
    for lock, found in objects.items():
        stack.enter_context(lock(found))


_OUTCOME_FIELDS = [*outcome_fields(WebhookEvent), "processed_at", "waiting_on"]


def _save_outcomes(events: list[WebhookEvent]) -> None:
    """Every run event's outcome, in one round trip (psycopg pipelines executemany): bulk_update's CASE per
    row and column cost more CPU than the rest of the chunk's statements together."""
    if not events:
        return
    connection = transaction.get_connection()
    quote, fields = connection.ops.quote_name, [WebhookEvent._meta.get_field(name) for name in _OUTCOME_FIELDS]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)  # type: ignore[union-attr]
    sql = f"UPDATE {quote(WebhookEvent._meta.db_table)} SET {assignments} WHERE id = %s"  # noqa: S608 - identifiers from the model
    fields.append(WebhookEvent._meta.pk)  # the WHERE's; values as the fields write them (SQLite binds no UUID)
    rows = [[field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields] for event in events]  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _release(event_ids: list[uuid.UUID]) -> None:
    """Give claimed events that were never run back to waiting, their claim uncounted: a first claim was
    a received event, a later one a failed event (now due)."""
    WebhookEvent.objects.filter(id__in=event_ids, status=Status.PROCESSING).update(
        status=Case(When(attempts=1, then=Value(Status.RECEIVED)), default=Value(Status.FAILED)),
        attempts=F("attempts") - 1,
        lease_until=None,
        next_attempt_at=Now(),
    )


def webhook_event_process(*, event_id: uuid.UUID) -> str | None:
    """Process one inbox row exactly once; returns its new status, or None if it was not ours to run.

    First the claim is counted in its own commit, so a worker that dies mid-event (or an event that
    kills workers) still uses up an attempt. Then, in one transaction holding the row lock (a second
    worker with the same event waits, then finds it no longer `processing` and walks away), the handler's
    domain writes and the status change commit together. A failing handler runs in a savepoint, so none of its writes
    survive, and the failure is recorded in the same transaction.
    """
    claimed = claim_returning(WebhookEvent.objects.filter(id=event_id), _CLAIM_FIELDS, reclaim_running=True)
    if claimed is None:
        return None
    [(status, wakes)] = _run_chunk([(event_id, claimed)], running=[])
    if wakes:
        _wake_waiting_on({wakes})
    return status


def _wake_waiting_on(customer_ids: set[str]) -> None:
    """Make due now the failed events waiting on these customers (their customer, or what hangs off it, was
    not there yet; an event of theirs has just been applied), and nudge a drain. Outside any transaction:
    it must see what committed just before. One statement (a partial index) for a whole batch."""
    if not customer_ids:
        return
    woken = WebhookEvent.objects.filter(status=Status.FAILED, waiting_on__in=customer_ids).update(
        waiting_on="", next_attempt_at=Now()
    )
    if woken:
        log.info("webhook_events_woken", customers=len(customer_ids), count=woken)
        _enqueue_processing()


Payload = tuple[Mapping[str, Any], datetime] | Exception
# Events about an object this young continue the trace of the checkout that made it (see _trace).
TRACE_CONTINUATION = timedelta(hours=1)


_PAYLOAD_FIELDS = ("type", "raw_body", "provider_created_at", "traceparent")
# Read with the claim: the payload's, and what decides which events share a transaction (_chunk).
_CLAIM_FIELDS = (*_PAYLOAD_FIELDS, "customer_id", "object_id")


def _payloads(claimed: list[dict[str, Any]]) -> list[tuple[Payload, dict[str, Any]]]:
    """For each claimed event (its _PAYLOAD_FIELDS), the object to apply and its version time: the event's
    own, or — when the event cannot decide (see webhooks.handlers.REFETCHERS) — the object as Stripe has it
    now. Or the error fetching it. Also where its processing span belongs (_trace). The events of one type
    are refetched together: what their refetcher reads costs one query."""
    versions: list[tuple[Mapping[str, Any], datetime]] = []
    traces, refetching = [], defaultdict(list)
    for n, fields in enumerate(claimed):
        obj, created = json.loads(fields["raw_body"])["data"]["object"], fields["provider_created_at"]
        versions.append((obj, created))
        traces.append(_trace(obj, created, ingestion=fields["traceparent"]))
        if refetch := REFETCHERS.get(fields["type"]):
            refetching[refetch].append(n)
    payloads: list[Payload] = list(versions)
    for refetch, numbers in refetching.items():
        try:
            refetched = refetch([versions[n] for n in numbers])
        except Exception as exc:  # recorded with each event, in the processing transaction
            refetched = [exc] * len(numbers)
        for n, found in zip(numbers, refetched, strict=True):
            payloads[n] = found or versions[n]
    return list(zip(payloads, traces, strict=True))


def _trace(obj: Mapping[str, Any], created: datetime, *, ingestion: str) -> dict[str, Any]:
    """The processing span links to the request that stored the event, however this run was enqueued.
    A checkout's trace context travels through Stripe in metadata (billing.gateway): the events of the
    object's first hour (completion, the new subscription) continue that trace, later ones only link to it."""
    metadata = obj.get("metadata")
    checkout = str(metadata.get("traceparent") or "") if isinstance(metadata, dict) else ""
    born = obj.get("created")
    young = isinstance(born, int) and created - datetime.fromtimestamp(born, tz=UTC) < TRACE_CONTINUATION
    if checkout and young:
        return {"parent": checkout, "links": [ingestion]}
    return {"links": [ingestion, checkout]}


def _run_handler(event: WebhookEvent, payload: Payload, *, isolate: bool, refresh: bool) -> tuple[bool, set[uuid.UUID]]:
    """Run the event's handler and set the resulting status on `event` (not saved). Returns whether it
    failed for want of its customer, and the users whose billing state it changed. `isolate`: in a
    savepoint, its failure recorded; otherwise a failure raises _Rerun (the caller's transaction rolls
    back). `refresh`: their entitlements are refreshed in that savepoint, otherwise the caller refreshes
    them in the same transaction."""
    now = timezone.now()
    handler = HANDLERS.get(event.type)
    event.waiting_on = ""
    if event.attempts > event.retry_policy.max_attempts:  # its claims used them up: workers died on it
        event.status, event.last_error = Status.DEAD, f"gave up after {event.attempts - 1} attempts; {event.last_error}"
        return False, set()
    if handler is None:
        event.status, event.last_error, event.processed_at = Status.IGNORED, "no handler for this type", now
        return False, set()
    try:
        # A failed refetch, or this handler's failure in the chunk's first run: nothing written, recorded as
        # any failure (raised here so that it is logged, and reaches Sentry, with its traceback).
        if isinstance(payload, Exception):
            raise payload
        obj, version = payload
        if isolate:
            with transaction.atomic():
                changed_users = handler(obj, version)
                if refresh:
                    entitlements_refresh(user_ids=changed_users)  # a billing change reaches the apps above billing
        else:
            changed_users = handler(obj, version)
    except Exception as exc:
        if not isolate and exc is not payload:
            # Updates earlier handlers left waiting failed when this one's statement sent them: not its fault.
            raise _Rerun(None if isinstance(exc, WriteBatchFailed) else (event.id, exc)) from exc
        return _record_handler_failure(event, exc), set()
    event.status, event.last_error, event.processed_at = Status.PROCESSED, "", now
    return False, changed_users


def _record_handler_failure(event: WebhookEvent, exc: Exception) -> bool:
    """Set `event` failed (unsaved); returns whether it failed for want of its customer. Called in the
    `except` that caught `exc`: log.exception logs it from there."""
    # Transient: back off and retry. Bad data or a bug: dead at once, a person replays it once fixed.
    dead = record_failure(event, exc) is None
    waits = isinstance(exc, NotYetKnown) and not dead
    if waits:
        event.waiting_on = event.customer_id  # woken when an event of its customer lands
    if is_transient(exc):
        log.warning("webhook_event_failed", event_id=event.event_id, error=event.last_error, dead=dead)
    else:
        log.exception("webhook_event_dead", event_id=event.event_id)
    return waits and isinstance(exc, NotYetKnown) and exc.customer_missing


def _count(event_type: str, status: str, received_at: datetime) -> None:
    metrics.EVENTS_PROCESSED.labels(event_type, status).inc()
    if status == Status.PROCESSED:
        metrics.PROCESSING_LATENCY.observe((timezone.now() - received_at).total_seconds())


def webhook_events_sweep() -> int:
    """Nudge a drain when any event is due: never picked up (its nudge was lost), failed and due, or
    claimed by a worker that died (its lease ran out). Returns how many are due. The drain takes them; a
    lost lease's event goes back through the claim, its used attempt still counted."""
    due_now = due(WebhookEvent).count()
    if due_now:
        _enqueue_processing()
    metrics.BACKLOG.set(
        WebhookEvent.objects.filter(status__in=[Status.RECEIVED, Status.FAILED, Status.PROCESSING]).count()
    )
    metrics.DEAD.set(WebhookEvent.objects.filter(status=Status.DEAD).count())
    return due_now


@transaction.atomic(durable=True)
def webhook_event_replay(*, event_id: uuid.UUID, staff_id: str, request: HttpRequest | None = None) -> WebhookEvent:
    """Run an event again from the start, even a processed one: handlers are idempotent and ignore
    stale versions, so a replay can only bring our state up to what the event says."""
    event = WebhookEvent.objects.select_for_update().get(id=event_id)  # waits for a worker holding it
    previous = event.status
    event.status, event.attempts, event.last_error, event.processed_at = Status.RECEIVED, 0, "", None
    event.next_attempt_at = timezone.now() + timedelta(seconds=settings.WEBHOOK_PICKUP_GRACE_SECONDS)
    event.save(update_fields=["status", "attempts", "last_error", "processed_at", "next_attempt_at"])
    _audit_staff_action(audit.AuditAction.WEBHOOK_REPLAYED, event, previous, staff_id=staff_id, request=request)
    _enqueue_processing()
    return event


@transaction.atomic(durable=True)
def webhook_event_mark_ignored(*, event_id: uuid.UUID, staff_id: str, request: HttpRequest | None = None) -> bool:
    """Stop retrying an event a person has judged irrelevant; a processed event keeps its status."""
    event = WebhookEvent.objects.select_for_update().get(id=event_id)
    if event.status in (Status.PROCESSED, Status.IGNORED):
        return False
    previous = event.status
    event.status, event.last_error = Status.IGNORED, f"marked ignored by staff {staff_id} (was {previous})"
    event.save(update_fields=["status", "last_error"])
    _audit_staff_action(audit.AuditAction.WEBHOOK_IGNORED, event, previous, staff_id=staff_id, request=request)
    return True


def _audit_staff_action(
    action: audit.AuditAction, event: WebhookEvent, previous: str, *, staff_id: str, request: HttpRequest | None
) -> None:
    audit.record(
        action=action,
        actor_type=audit.ActorType.STAFF,
        actor_id=staff_id,
        target_type="webhook_event",
        target_id=str(event.id),
        metadata={"event_id": event.event_id, "type": event.type, "previous_status": previous},
        request=request,
    )


# --- Retention and erasure of raw payloads (GDPR) ------------------------------------------------

# A redacted raw body keeps the envelope only, and starts with this key (so it is found and skipped).
REDACTED_KEY = "jia_redacted"
_REDACTED_PREFIX = '{"' + REDACTED_KEY + '"'
_FINISHED = (Status.PROCESSED, Status.IGNORED)


def webhook_event_redacted_body(event: WebhookEvent, *, reason: str, kind: str | None = None) -> str:
    """What is left of a raw body once its personal data must go: the envelope (id, type, time, mode,
    and which object it was about: `kind`, read from the body unless given). The row stays: its event id
    is what deduplicates deliveries."""
    if kind is None:
        try:
            kind = json.loads(event.raw_body)["data"]["object"].get("object", "")
        except (ValueError, KeyError, TypeError, AttributeError):
            kind = ""
    return _redacted_body(
        reason=reason,
        event_id=event.event_id,
        type=event.type,
        created=event.provider_created_at,
        livemode=event.livemode,
        api_version=event.api_version,
        object_id=event.object_id,
        kind=kind or "",
    )


def _redacted_body(
    *,
    reason: str,
    event_id: str,
    type: str,
    created: datetime,
    livemode: bool,
    api_version: str,
    object_id: str,
    kind: str,
) -> str:
    return json.dumps(
        {
            REDACTED_KEY: reason,
            "id": event_id,
            "object": "event",
            "type": type,
            "created": int(created.timestamp()),
            "livemode": livemode,
            "api_version": api_version,
            "data": {"object": {"id": object_id, "object": kind}},
        }
    )


def webhook_event_is_redacted(event: WebhookEvent) -> bool:
    return event.raw_body.startswith(_REDACTED_PREFIX)


def webhook_payloads_purge(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Redact the raw bodies of processed or ignored events received more than
    WEBHOOK_PAYLOAD_RETENTION_DAYS ago, and of those about a Stripe customer Stripe has deleted (what
    Stripe sends after a GDPR erasure deleted the customer still carries its email and name). Events
    still to be processed, or dead, keep their body: a person may need it. Returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_PAYLOAD_RETENTION_DAYS)
    deleted_customers = Customer.objects.filter(
        stripe_deleted_at__isnull=False, stripe_customer_id__isnull=False
    ).values("stripe_customer_id")
    finished = WebhookEvent.objects.filter(status__in=_FINISHED).exclude(raw_body__startswith=_REDACTED_PREFIX)
    due = finished.filter(received_at__lt=cutoff) | finished.filter(customer_id__in=deleted_customers)
    purged = 0
    while True:
        with transaction.atomic(durable=True):
            events = list(due.select_for_update(skip_locked=True).order_by("received_at")[:batch_size])
            for event in events:
                event.raw_body = webhook_event_redacted_body(event, reason="retention")
            WebhookEvent.objects.bulk_update(events, ["raw_body"])
        purged += len(events)
        if len(events) < batch_size:
            break
    if purged:
        log.info("webhook_payloads_purged", count=purged)
    return purged


def webhook_events_prune(*, now: datetime | None = None, batch_size: int = 1000, max_batches: int = 1000) -> int:
    """Delete processed and ignored events received more than WEBHOOK_INBOX_RETENTION_DAYS ago, in batches:
    each batch is one autocommit `DELETE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`, so no
    lock is held longer than one batch and a row a person is replaying is left for the next run. Events to
    be processed, failed or dead stay whatever their age. Returns how many rows went.

    A pruned event's id no longer deduplicates: the retention outlasts Stripe's redelivery (3 days) and its
    event listing the gap-filling reads (30 days); the production guard refuses less than 31 days."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_INBOX_RETENTION_DAYS)
    connection = transaction.get_connection()
    table = connection.ops.quote_name(WebhookEvent._meta.db_table)
    sql = (
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE status IN (%s, %s) AND received_at < %s "  # noqa: S608
        "ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)"
    )
    pruned = 0
    for _ in range(max_batches):
        with connection.cursor() as cursor:  # autocommit: each batch commits by itself
            cursor.execute(sql, [Status.PROCESSED, Status.IGNORED, cutoff, batch_size])
            deleted = cursor.rowcount
        pruned += deleted
        if deleted < batch_size:
            break
    if pruned:
        log.info("webhook_events_pruned", count=pruned, cutoff=cutoff.isoformat())
    return pruned
