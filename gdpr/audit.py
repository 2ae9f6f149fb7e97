"""The audit trail's public API: `record(...)` appends one event, in the caller's transaction (`entry(...)`
gives its rows to a caller that appends them in the statement of its change);
`audit_seal_pending()` chains appended events into the hash chain; `verify_chain()` finds the first broken
link.

Chain rules (also what `manage.py verify_audit_chain` checks), for sealed rows:
- rows are ordered by `seq` (1, 2, 3, ... without gaps); row 1's `prev_hash` is GENESIS_HASH;
- `hash = sha256(canonical_json(seq, id, occurred_at, actor_type, actor_id, action, target_type, target_id,
  request_id, metadata, prev_hash))`: every column of the row.

People stay out of the chain, so it never has to change. `record` writes a data subject's id as their
pseudonym (gdpr.registry.pseudonym_for: keyed and stable, so compliance finds a person's events by
computing it) wherever it would be hashed: a user actor's id, the target id of a PERSONAL_TARGET_TYPES
target, the metadata values under PERSONAL_REFERENCE_KEYS. The rest of what is personal (ip, user agent,
metadata under PERSONAL_METADATA_KEYS) goes to the event's AuditEventPersonal row, outside the chain:
erasure deletes that row and updates nothing. The price is that this side data is not tamper-evident.

Why sealing is apart from appending: chaining a row needs the previous row's hash, so appends that chained
themselves had to take one global lock and hold it until their transaction committed, which serialised
every audited write of the service (checkout, each webhook event, GDPR, admin). `record` now inserts the row
without seq, prev_hash or hash: still atomic with the change it describes, and no lock. The sealer (beat,
every few seconds, and `verify_audit_chain`) takes the chain's lock, a transaction-scoped PostgreSQL
advisory lock (SQLite serialises writers itself: `transaction_mode=IMMEDIATE`), and chains the committed
unsealed rows in batches, in (occurred_at, id) order within a batch. So the chain's order is sealing order:
a row whose transaction commits after a batch was sealed joins a later batch, after rows newer than it.
Until then a row is pending, not broken; the trigger refuses any UPDATE of it but sealing
(gdpr/migrations/0009), and nothing deletes it.
"""

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from gdpr.models import ActorType, AuditAction, AuditEvent, AuditEventPersonal
from gdpr.registry import PSEUDONYM_PREFIX, pseudonym_for
from payments_project.ratelimit import client_ip
from payments_project.raw_rows import insert_many
from payments_project.write_batch import defer

__all__ = [
    "GENESIS_HASH",
    "PERSONAL_METADATA_KEYS",
    "PERSONAL_REFERENCE_KEYS",
    "PERSONAL_TARGET_TYPES",
    "ActorType",
    "AuditAction",
    "AuditEvent",
    "AuditEventPersonal",
    "ChainBreak",
    "NotInTransaction",
    "audit_seal_pending",
    "entry",
    "record",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key of the audit chain: any constant no other lock in this database uses.
AUDIT_CHAIN_LOCK_KEY = 0x4A1A_A0D1
# Rows one sealing transaction chains: a few thousand rows' hashes and one UPDATE, well under a second.
SEAL_BATCH_SIZE = 1000
# Metadata keys whose values are personal data: kept in the event's AuditEventPersonal row, outside the
# chain, where erasure deletes them. Add keys here rather than putting personal data under another name.
PERSONAL_METADATA_KEYS = frozenset(
    {
        "email",
        "invitee_email",
        "username",
        "name",
        "full_name",
        "phone",
        "address",
        "billing_address",
        "ip",
        "user_agent",
        "filters",  # an admin query string: it may search for a user id or an address
    }
)
# Target types whose target_id is a user id, and metadata keys whose (string) values are: the chain
# holds them as the user's pseudonym (see the module docstring).
PERSONAL_TARGET_TYPES = frozenset({"user"})
PERSONAL_REFERENCE_KEYS = frozenset(
    {"user_id", "owner_user_id", "member_user_id", "invited_by_user_id", "accepted_by_user_id"}
)
_USER_AGENT_MAX = 512


class NotInTransaction(RuntimeError):
    """`record` was called outside a transaction: the event would not commit with the change it describes."""


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    event_id: str
    reason: str

    def __str__(self) -> str:
        return f"audit chain broken at seq {self.seq} (event {self.event_id}): {self.reason}"


def canonical_json(value: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder).encode()


def _plain_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """What the JSON column will give back (UUIDs, datetimes and Decimals as strings)."""
    return dict(json.loads(json.dumps(dict(value), cls=DjangoJSONEncoder)))


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pseudonymous(user_id: str) -> str:
    """A user id as the chain holds it. A user id is a UUID: anything else raises (a caller's mistake
    must not put a name into the chain for good); a pseudonym already is one."""
    if not user_id or user_id.startswith(PSEUDONYM_PREFIX):
        return user_id
    try:
        return pseudonym_for(user_id)
    except ValueError:
        raise ValueError("a user id in the audit trail must be a UUID") from None


def event_hash(event: AuditEvent) -> str:
    content = {
        "seq": event.seq,
        "id": str(event.id),
        "occurred_at": _timestamp(event.occurred_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": event.request_id,
        "metadata": event.metadata,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(canonical_json(content)).hexdigest()


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK_KEY])


def record(
    *,
    action: AuditAction,
    actor_type: ActorType,
    actor_id: str = "",
    target_type: str = "",
    target_id: str = "",
    metadata: Mapping[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one audit event inside the caller's transaction (raises NotInTransaction outside one),
    unsealed: the sealer gives it its seq and hashes after the transaction commits.

    Pass user ids as they are: `record` writes them as pseudonyms (see the module docstring). `request`,
    when given, supplies the client ip (through the trusted-proxy rule of
    payments_project.ratelimit.client_ip), the user agent and the request id. The ip, the user agent and
    metadata keys listed in PERSONAL_METADATA_KEYS are kept apart, in `event.personal`.
    """
    if not connection.in_atomic_block:
        raise NotInTransaction("gdpr.audit.record must run inside the transaction of the change it records")
    columns, side_columns = entry(
        action=action,
        actor_type=actor_type,
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        metadata=metadata,
        request=request,
    )
    event = AuditEvent(**columns)
    side = (
        None
        if side_columns is None
        else AuditEventPersonal(
            event=event, ip=side_columns["ip"], user_agent=side_columns["user_agent"], metadata=side_columns["metadata"]
        )
    )
    if defer(_append_many, (event, side)):
        return event  # appended with the rest of the batch, in the same transaction (write_batch)
    event._appending = True  # type: ignore[attr-defined]
    event.save()
    if side is not None:
        side.save(force_insert=True)
    return event


def entry(
    *,
    action: AuditAction,
    actor_type: ActorType,
    actor_id: str = "",
    target_type: str = "",
    target_id: str = "",
    metadata: Mapping[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The rows `record` appends (the event, and its personal side row when there is one) as column values
    (raw_rows.NewRow's: a column left out takes its default), for a writer that appends them itself in one
    statement with the change they describe (payments_project.raw_rows.update_then_insert): atomically with it,
    as `record` would."""
    action = AuditAction(action)  # refuses anything that is not a member
    actor_type = ActorType(actor_type)
    plain = _plain_json(metadata or {})
    personal = {key: plain.pop(key) for key in sorted(PERSONAL_METADATA_KEYS & plain.keys())}
    for key in PERSONAL_REFERENCE_KEYS & plain.keys():
        if isinstance(plain[key], str):
            plain[key] = _pseudonymous(plain[key])
    actor_id, target_id = str(actor_id), str(target_id)
    if actor_type == ActorType.USER:
        actor_id = _pseudonymous(actor_id)
    if target_type in PERSONAL_TARGET_TYPES:
        target_id = _pseudonymous(target_id)
    ip: str | None = None
    user_agent = request_id = ""
    if request is not None:
        ip = client_ip(request) or None
        user_agent = request.META.get("HTTP_USER_AGENT", "")[:_USER_AGENT_MAX]
        request_id = str(getattr(request, "request_id", "") or "")[:128]

    event_id = AuditEvent._meta.pk.get_default()  # the side row's key too
    event = {
        "id": event_id,
        "occurred_at": timezone.now(),
        "actor_type": actor_type.value,
        "actor_id": actor_id,
        "action": action.value,
        "target_type": target_type,
        "target_id": target_id,
        "request_id": request_id,
        "metadata": plain,
    }
    side = (
        {"event_id": event_id, "ip": ip, "user_agent": user_agent, "metadata": personal}
        if ip or user_agent or personal
        else None
    )
    return event, side


def _append_many(rows: list[tuple[AuditEvent, AuditEventPersonal | None]]) -> None:
    """Append a write batch's events in one INSERT (the ORM's bulk_create is closed to audit events, so that
    nothing else appends), then their personal rows in another."""
    insert_many(AuditEvent, [event for event, _ in rows])
    insert_many(AuditEventPersonal, [side for _, side in rows if side is not None])


@transaction.atomic(durable=True)
def audit_seal_pending(*, batch_size: int = SEAL_BATCH_SIZE) -> int:
    """Chain up to `batch_size` committed unsealed events after the last sealed one; return how many.

    One sealer at a time (the chain's lock, held until commit), so seq stays gap-free and each row is
    sealed once: a second sealer waits, then reads (READ COMMITTED) what the first committed. The seq and
    hash unique constraints refuse a double assignment whatever happens. Beat runs it every few seconds.
    """
    _lock_chain()
    sealed = AuditEvent.objects.filter(seq__isnull=False)  # whose hash is set too (audit_sealed_whole)
    last = cast(tuple[int, str] | None, sealed.order_by("-seq").values_list("seq", "hash").first())
    seq, prev_hash = last if last else (0, GENESIS_HASH)
    pending = list(AuditEvent.objects.filter(seq__isnull=True).order_by("occurred_at", "id")[:batch_size])
    for event in pending:
        seq += 1
        event.seq, event.prev_hash = seq, prev_hash
        event.hash = prev_hash = event_hash(event)
    # The one update of an audit row there is: the ORM's AuditEvent manager refuses updates, and the trigger
    # lets only this one through (chain columns of an unsealed row, nothing else). executemany, not
    # bulk_update: psycopg pipelines it, where bulk_update's CASE per row grows with the batch squared.
    with connection.cursor() as cursor:
        cursor.executemany(
            "UPDATE gdpr_auditevent SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s",
            [(e.seq, e.prev_hash, e.hash, AuditEvent._meta.pk.get_db_prep_value(e.id, connection)) for e in pending],
        )
    return len(pending)


def pending_count() -> int:
    """Events appended but not sealed yet: not part of the chain so far, and not a break."""
    return AuditEvent.objects.filter(seq__isnull=True).count()


def _break_in(event: AuditEvent, *, expected_seq: int, expected_prev: str) -> str | None:
    if event.seq != expected_seq:
        return f"expected seq {expected_seq} (a row is missing or out of place)"
    if event.prev_hash != expected_prev:
        return "prev_hash does not match the previous row's hash"
    if event_hash(event) != event.hash:
        return "content does not match its hash"
    return None


def _events_in_chain_order(chunk_size: int) -> Iterator[AuditEvent]:
    return AuditEvent.objects.filter(seq__isnull=False).order_by("seq").iterator(chunk_size=chunk_size)


def verify_chain(*, chunk_size: int = 2000) -> tuple[int, ChainBreak | None]:
    """Walk the sealed chain; return how many rows were checked and the first broken link, if any
    (unsealed rows are pending: `pending_count()`)."""
    expected_seq, expected_prev, checked = 1, GENESIS_HASH, 0
    with transaction.atomic():  # one snapshot (REPEATABLE READ is not needed: sealing only adds to the end)
        for event in _events_in_chain_order(chunk_size):
            reason = _break_in(event, expected_seq=expected_seq, expected_prev=expected_prev)
            if reason is not None:
                return checked, ChainBreak(seq=cast(int, event.seq), event_id=str(event.id), reason=reason)
            checked += 1
            expected_seq, expected_prev = expected_seq + 1, cast(str, event.hash)  # as checked just now
    return checked, None
