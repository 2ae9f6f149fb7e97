"""The audit trail's public API: `record(...)` appends one event to the hash chain, in the caller's
transaction; `verify_chain()` finds the first broken link.

Chain rules (also what `manage.py verify_audit_chain` checks):
- rows are ordered by `seq` (1, 2, 3, ... without gaps); row 1's `prev_hash` is GENESIS_HASH;
- `personal_digest = sha256(personal_salt || canonical_json(actor_id, ip, user_agent, personal))`,
  recomputed only while the salt is present (an erased row has blank personal columns and salt);
- `hash = sha256(canonical_json(seq, id, occurred_at, actor_type, action, target_type, target_id,
  request_id, metadata, personal_digest, prev_hash))`.

Person ids in the hashed columns. An event *about* a user (target_type "user", or metadata keys in
PERSONAL_REFERENCE_KEYS such as `user_id`) would put that user's id into hashed content, which erasure
could then never remove. So `record` lists such places in `personal_refs` (e.g. ["metadata.user_id",
"target_id"]); the row keeps the real values where readers expect them, but the hash sees them masked
("") plus `personal_refs`, and the personal digest commits to the real values (`"refs"` in its JSON).
Erasure replaces them with the pseudonym and blanks the salt, like the actor's personal columns: the
chain still verifies. A row without references hashes exactly as before (old rows stay valid).
Appends take a transaction-scoped PostgreSQL advisory lock before reading the previous hash, so
concurrent writers make one chain (SQLite serialises writers itself: `transaction_mode=IMMEDIATE`).
"""

import hashlib
import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from gdpr.models import ActorType, AuditAction, AuditEvent
from payments_project.ratelimit import client_ip

__all__ = [
    "GENESIS_HASH",
    "PERSONAL_METADATA_KEYS",
    "PERSONAL_REFERENCE_KEYS",
    "PERSONAL_TARGET_TYPES",
    "ActorType",
    "AuditAction",
    "AuditEvent",
    "ChainBreak",
    "NotInTransaction",
    "record",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key of the audit chain: any constant no other lock in this database uses.
AUDIT_CHAIN_LOCK_KEY = 0x4A1A_A0D1
# Metadata keys whose values are personal data: stored with the other personal columns, committed to
# by the digest and erasable. Add keys here rather than putting personal data under another name.
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
    }
)
# Target types whose target_id is a person's id, and metadata keys whose (string) values are: both stay
# readable where they are, but are hashed through the personal digest only (see the module docstring).
PERSONAL_TARGET_TYPES = frozenset({"user"})
PERSONAL_REFERENCE_KEYS = frozenset(
    {"user_id", "owner_user_id", "member_user_id", "invited_by_user_id", "accepted_by_user_id"}
)
TARGET_REF = "target_id"
METADATA_REF_PREFIX = "metadata."
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


def personal_digest(
    *,
    salt: str,
    actor_id: str,
    ip: str | None,
    user_agent: str,
    personal: Mapping[str, Any],
    refs: Mapping[str, Any] | None = None,
) -> str:
    committed: dict[str, Any] = {"actor_id": actor_id, "ip": ip or "", "user_agent": user_agent, "personal": personal}
    if refs:  # only rows with person references: older rows keep their digest
        committed["refs"] = dict(refs)
    return hashlib.sha256(bytes.fromhex(salt) + canonical_json(committed)).hexdigest()


def personal_references(*, target_type: str, target_id: str, metadata: Mapping[str, Any]) -> list[str]:
    """Where a new event holds a person's id in its hashed columns (sorted; see the module docstring)."""
    refs = [METADATA_REF_PREFIX + key for key in PERSONAL_REFERENCE_KEYS if isinstance(metadata.get(key), str)]
    if target_type in PERSONAL_TARGET_TYPES and target_id:
        refs.append(TARGET_REF)
    return sorted(ref for ref in refs if _ref_value(ref, target_id=target_id, metadata=metadata))


def _ref_value(ref: str, *, target_id: str, metadata: Mapping[str, Any]) -> Any:
    return target_id if ref == TARGET_REF else metadata.get(ref.removeprefix(METADATA_REF_PREFIX))


def reference_values(event: AuditEvent) -> dict[str, Any]:
    """The values at the event's personal references, as they are now."""
    return {ref: _ref_value(ref, target_id=event.target_id, metadata=event.metadata) for ref in event.personal_refs}


def event_hash(event: AuditEvent) -> str:
    refs = list(event.personal_refs or [])
    metadata = event.metadata
    if refs:
        masked = {ref.removeprefix(METADATA_REF_PREFIX) for ref in refs if ref.startswith(METADATA_REF_PREFIX)}
        metadata = {key: "" if key in masked else value for key, value in metadata.items()}
    content = {
        "seq": event.seq,
        "id": str(event.id),
        "occurred_at": _timestamp(event.occurred_at),
        "actor_type": event.actor_type,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": "" if TARGET_REF in refs else event.target_id,
        "request_id": event.request_id,
        "metadata": metadata,
        "personal_digest": event.personal_digest,
        "prev_hash": event.prev_hash,
    }
    if refs:  # only rows with person references: older rows keep their hash
        content["personal_refs"] = refs
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
    """Append one audit event inside the caller's transaction (raises NotInTransaction outside one).

    `request`, when given, supplies the client ip (through the trusted-proxy rule of
    payments_project.ratelimit.client_ip), the user agent and the request id. Metadata keys listed in
    PERSONAL_METADATA_KEYS are kept with the personal columns so that erasure can remove them.
    """
    if not connection.in_atomic_block:
        raise NotInTransaction("gdpr.audit.record must run inside the transaction of the change it records")
    action = AuditAction(action)  # refuses anything that is not a member
    actor_type = ActorType(actor_type)
    plain = _plain_json(metadata or {})
    personal = {key: plain.pop(key) for key in sorted(PERSONAL_METADATA_KEYS & plain.keys())}
    ip: str | None = None
    user_agent = request_id = ""
    if request is not None:
        ip = client_ip(request) or None
        user_agent = request.META.get("HTTP_USER_AGENT", "")[:_USER_AGENT_MAX]
        request_id = str(getattr(request, "request_id", "") or "")[:128]
    salt = secrets.token_hex(16)
    target_id = str(target_id)
    refs = personal_references(target_type=target_type, target_id=target_id, metadata=plain)

    _lock_chain()
    previous = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = (previous[0] + 1, previous[1]) if previous else (1, GENESIS_HASH)
    event = AuditEvent(
        seq=seq,
        occurred_at=timezone.now(),
        actor_type=actor_type.value,
        action=action.value,
        target_type=target_type,
        target_id=target_id,
        request_id=request_id,
        metadata=plain,
        actor_id=str(actor_id),
        ip=ip,
        user_agent=user_agent,
        personal=personal,
        personal_salt=salt,
        personal_refs=refs,
        personal_digest=personal_digest(
            salt=salt,
            actor_id=str(actor_id),
            ip=ip,
            user_agent=user_agent,
            personal=personal,
            refs={ref: _ref_value(ref, target_id=target_id, metadata=plain) for ref in refs},
        ),
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event)
    event._appending = True  # type: ignore[attr-defined]
    event.save()
    return event


def _break_in(event: AuditEvent, *, expected_seq: int, expected_prev: str) -> str | None:
    if event.seq != expected_seq:
        return f"expected seq {expected_seq} (a row is missing or out of place)"
    if event.prev_hash != expected_prev:
        return "prev_hash does not match the previous row's hash"
    if event.personal_salt:
        digest = personal_digest(
            salt=event.personal_salt,
            actor_id=event.actor_id,
            ip=event.ip,
            user_agent=event.user_agent,
            personal=event.personal,
            refs=reference_values(event),
        )
        if digest != event.personal_digest:
            return "personal columns do not match their digest"
    if event_hash(event) != event.hash:
        return "content does not match its hash"
    return None


def _events_in_chain_order(chunk_size: int) -> Iterator[AuditEvent]:
    return AuditEvent.objects.order_by("seq").iterator(chunk_size=chunk_size)


def verify_chain(*, chunk_size: int = 2000) -> tuple[int, ChainBreak | None]:
    """Walk the whole chain; return how many rows were checked and the first broken link, if any."""
    expected_seq, expected_prev, checked = 1, GENESIS_HASH, 0
    with transaction.atomic():  # one snapshot (REPEATABLE READ is not needed: appends only add rows)
        for event in _events_in_chain_order(chunk_size):
            reason = _break_in(event, expected_seq=expected_seq, expected_prev=expected_prev)
            if reason is not None:
                return checked, ChainBreak(seq=event.seq, event_id=str(event.id), reason=reason)
            checked += 1
            expected_seq, expected_prev = event.seq + 1, event.hash
    return checked, None
