"""Writes: refreshing entitlements after any change that may affect them, and the family lifecycle.

Lock order (every writer here follows it, so two of them never wait on each other in a cycle):
family group rows (by id) → invitation row → entitlement snapshot rows (by user id).
"""

import hashlib
import secrets
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from entitlements import cache, selectors
from entitlements.errors import (
    AlreadyInFamily,
    FamilyNotFound,
    FamilyPlanRequired,
    FamilySuspended,
    InvitationEmailMismatch,
    InvitationExpired,
    InvitationNotFound,
    InvitationUsed,
    MemberNotFound,
    NoSeatLeft,
    NotFamilyOwner,
    OwnerCannotLeave,
)
from entitlements.models import (
    EntitlementSnapshot,
    FamilyGroup,
    FamilyGroupStatus,
    FamilyInvitation,
    FamilyMembership,
    InvitationStatus,
    MembershipRole,
)
from entitlements.resolution import family_seats, resolve
from gdpr import audit
from tasks.base import enqueue_on_commit
from tasks.errors import TransientError
from tasks.outbox import emit_many

log = structlog.get_logger(__name__)

ActorType = audit.ActorType
AuditAction = audit.AuditAction


# --- Refresh ------------------------------------------------------------------------------------


# No savepoint of its own (two round trips per webhook event): it runs in its caller's transaction, and
# a failure rolls that back; no caller catches one and carries on.
@transaction.atomic(savepoint=False)
def entitlements_refresh(*, user_ids: set[uuid.UUID], traceparents: Mapping[uuid.UUID, str] | None = None) -> None:
    """Recompute the entitlements of these users and of everyone who depends on them, in the
    caller's transaction (the webhook processor's, right after the billing change).

    - The set grows by the members of every family the users own: an owner's plan is theirs too.
    - Each owner's group is suspended when they have no access-granting family plan any more, and
      reactivated when they have one again (audited).
    - Each user whose feature keys differ from their snapshot gets `entitlements.changed` (outbox
      and audit) with the keys added and removed, and a new snapshot.
    - After commit, every affected user's cache version is bumped, so the next check sees the change.

    `traceparents`: the trace each user's change continues, when it is not the active span's (a webhook
    drain refreshes the users of many events at once; each event's users continue its trace).
    """
    if not user_ids:
        return
    now = timezone.now()
    owned = FamilyGroup.objects.filter(owner_user_id__in=user_ids).order_by("id")
    groups = list(owned)  # mostly none: one plain read, and no lock to take
    if groups:
        groups = list(owned.select_for_update())
    members = set(
        FamilyMembership.objects.filter(group__in=groups, role=MembershipRole.MEMBER).values_list("user_id", flat=True)
    )
    affected = sorted(user_ids | members)

    # Lock the snapshots before reading what they will be compared with: a concurrent refresh of the
    # same user waits here, then reads (READ COMMITTED) what this one committed.
    snapshots = _snapshots_locked(affected, now=now)

    inputs = selectors.resolver_inputs(user_ids=affected)
    grace = selectors.past_due_grace()
    for group in groups:
        seats = family_seats(inputs.subscriptions, owner_user_id=group.owner_user_id, now=now, past_due_grace=grace)
        _family_group_set_status(group, FamilyGroupStatus.ACTIVE if seats else FamilyGroupStatus.SUSPENDED, now=now)

    resolved = resolve(
        user_ids=affected,
        subscriptions=inputs.subscriptions,
        memberships=inputs.memberships,
        now=now,
        past_due_grace=grace,
    )
    changed, events, traces = [], [], []
    for user_id in affected:
        snapshot = snapshots[user_id]
        before, after = set(snapshot.features), resolved[user_id].keys
        if before == after:
            continue
        added, removed = sorted(after - before), sorted(before - after)
        snapshot.features, snapshot.updated_at = sorted(after), now
        changed.append(snapshot)
        events.append(
            ("entitlements.changed", f"user:{user_id}", {"user_id": str(user_id), "added": added, "removed": removed})
        )
        traces.append((traceparents or {}).get(user_id, ""))
        audit.record(
            action=AuditAction.ENTITLEMENTS_CHANGED,
            actor_type=ActorType.SYSTEM,
            target_type="user",
            target_id=str(user_id),
            metadata={"added": added, "removed": removed},
        )
    emit_many(
        events, traceparents=traces
    )  # one statement for all the changed users (a drain refreshes a whole batch's at once)
    _snapshots_save(changed)
    log.info("entitlements_refreshed", users=len(affected), changed=len(changed))
    # Always bump, changed keys or not: an expiry shown in the cached body may have moved.
    transaction.on_commit(lambda: entitlements_cache_invalidate(user_ids=affected), robust=True)


def _snapshots_locked(user_ids: list[uuid.UUID], *, now: datetime) -> dict[uuid.UUID, EntitlementSnapshot]:
    """The users' snapshot rows (`user_ids` sorted: the lock order), each made if missing and locked, in one
    statement: an insert meeting an existing row locks it instead (a no-op update of its key) and RETURNING
    reads it. One round trip where an insert-if-missing then SELECT … FOR UPDATE took two."""
    connection = transaction.get_connection()
    table = connection.ops.quote_name(EntitlementSnapshot._meta.db_table)
    values = ", ".join(["(%s, %s, %s)"] * len(user_ids))
    sql = (
        f"INSERT INTO {table} (user_id, features, updated_at) VALUES {values} "  # noqa: S608 - identifiers from the model
        "ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING user_id, features, updated_at"
    )
    # Values as the fields write them (SQLite, for make run and make demo, binds no UUID and has no jsonb).
    by_name = {field.name: field for field in EntitlementSnapshot._meta.concrete_fields}
    fields = [by_name[name] for name in ("user_id", "features", "updated_at")]
    params = [
        field.get_db_prep_save(value, connection)
        for user_id in user_ids
        for field, value in zip(fields, (user_id, [], now), strict=True)
    ]
    return {snapshot.user_id: snapshot for snapshot in EntitlementSnapshot.objects.raw(sql, params)}


def _snapshots_save(snapshots: list[EntitlementSnapshot]) -> None:
    """Save the snapshots' features in one round trip (psycopg pipelines executemany): bulk_update's CASE
    per row and column costs more CPU than a drain's whole refresh otherwise. Values as the fields write
    them (SQLite, for make run, binds no UUID)."""
    if not snapshots:
        return
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    by_name = {field.name: field for field in EntitlementSnapshot._meta.concrete_fields}
    fields = [by_name[name] for name in ("features", "updated_at")]
    sql = (
        f"UPDATE {quote(EntitlementSnapshot._meta.db_table)} SET "  # noqa: S608 - identifiers from the model
        f"{', '.join(f'{quote(field.column)} = %s' for field in fields)} WHERE user_id = %s"
    )
    rows = [
        [
            field.get_db_prep_save(getattr(snapshot, field.attname), connection)
            for field in (*fields, by_name["user_id"])
        ]
        for snapshot in snapshots
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


# Grants that end by time alone (past_due beyond the grace period, the period end of a subscription
# set to cancel) change no row, so no webhook refreshes them. A beat job refreshes the users whose
# grant ended within this window; refreshing twice is harmless (no change, no event), so the window
# is wider than the beat interval and a few missed runs lose nothing.
LAPSE_LOOKBACK = timedelta(minutes=15)


@transaction.atomic(durable=True)
def entitlements_refresh_lapsed(*, now: datetime | None = None) -> int:
    """Refresh every user whose grant ended by time in the last LAPSE_LOOKBACK (and, through
    entitlements_refresh, their family): their `entitlements.changed` goes out, their family is
    suspended. Returns how many users were refreshed. (Cached answers already stopped at the end.)"""
    now = now or timezone.now()
    since, grace = now - LAPSE_LOOKBACK, selectors.past_due_grace()
    user_ids = set(selectors.users_with_grants_ended(since=since, until=now, past_due_grace=grace))
    entitlements_refresh(user_ids=user_ids)
    return len(user_ids)


PLAN_REFRESH_BATCH = 200  # users per transaction when a catalog change refreshes a plan's subscribers


def entitlements_refresh_plans_on_commit(*, plan_ids: list[uuid.UUID], **_: object) -> None:
    """billing.catalog.plans_entitlements_changed: refresh those plans' subscribers once the import commits."""
    from entitlements.tasks import entitlements_refresh_plan_subscribers_task  # the task module imports this one

    enqueue_on_commit(entitlements_refresh_plan_subscribers_task, sorted(str(plan_id) for plan_id in plan_ids))


def entitlements_refresh_plan_subscribers(*, plan_ids: Collection[uuid.UUID]) -> int:
    """Refresh every user with an access-granting subscription to these plans (and so their families: a
    plan that lost seats suspends the members beyond them), PLAN_REFRESH_BATCH users per transaction.
    Returns how many users were refreshed."""
    user_ids = sorted(selectors.plan_subscriber_ids(plan_ids=plan_ids))
    for start in range(0, len(user_ids), PLAN_REFRESH_BATCH):
        with transaction.atomic(durable=True):
            entitlements_refresh(user_ids=set(user_ids[start : start + PLAN_REFRESH_BATCH]))
    return len(user_ids)


def _family_group_set_status(group: FamilyGroup, status: FamilyGroupStatus, *, now: datetime) -> None:
    if group.status == status:
        return
    group.status, group.status_changed_at = status, now
    group.save(update_fields=["status", "status_changed_at"])
    audit.record(
        action=AuditAction.FAMILY_SUSPENDED
        if status == FamilyGroupStatus.SUSPENDED
        else AuditAction.FAMILY_REACTIVATED,
        actor_type=ActorType.SYSTEM,
        target_type="family_group",
        target_id=str(group.id),
        metadata={"owner_user_id": str(group.owner_user_id)},
    )
    log.info("family_group_status_changed", group_id=str(group.id), status=status)


def entitlements_cache_versions_bump(*, user_ids: Collection[uuid.UUID]) -> None:
    """Bump the users' cache versions; a cache failure is a TransientError (the task retries it)."""
    try:
        cache.versions_bump(user_ids=user_ids)
    except Exception as exc:  # any cache failure: the caller decides how to retry
        raise TransientError(f"could not bump entitlement cache versions: {exc!r}") from exc


def entitlements_cache_invalidate(*, user_ids: Collection[uuid.UUID]) -> None:
    """Run after commit: bump now; if the cache is unreachable, log, count and retry in a Celery task
    (with backoff). Should that fail too, entries still expire by their TTL."""
    try:
        entitlements_cache_versions_bump(user_ids=user_ids)
    except TransientError as exc:
        cache.UNAVAILABLE.labels("bump", "error").inc()
        log.warning("entitlements_cache_bump_failed", users=len(user_ids), error=str(exc))
        from entitlements.tasks import entitlements_cache_bump_task  # the task module imports this one

        enqueue_on_commit(entitlements_cache_bump_task, sorted(str(user_id) for user_id in user_ids))


# --- Families -----------------------------------------------------------------------------------


def _normalise_email(email: str) -> str:
    return email.strip().lower()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user_audit(
    action: audit.AuditAction,
    *,
    actor_user_id: uuid.UUID,
    group: FamilyGroup,
    metadata: dict[str, object],
    request: HttpRequest | None,
) -> None:
    audit.record(
        action=action,
        actor_type=ActorType.USER,
        actor_id=str(actor_user_id),
        target_type="family_group",
        target_id=str(group.id),
        metadata=metadata,
        request=request,
    )


def _member_count(group: FamilyGroup) -> int:
    return FamilyMembership.objects.filter(group=group, role=MembershipRole.MEMBER).count()


@transaction.atomic(durable=True)
def family_group_create(
    *, owner_user_id: uuid.UUID, owner_email: str, request: HttpRequest | None = None
) -> FamilyGroup:
    """Create the caller's family; they need an access-granting family plan and must not be in a
    family already (owner or member: the membership's unique user decides, not a prior check)."""
    seats = selectors.family_seats_of(owner_user_id=owner_user_id)
    if seats == 0:
        raise FamilyPlanRequired("Creating a family needs an active family plan")
    group = FamilyGroup(owner_user_id=owner_user_id)
    try:
        with transaction.atomic():
            group.save(force_insert=True)
            FamilyMembership.objects.create(
                group=group, user_id=owner_user_id, email=_normalise_email(owner_email), role=MembershipRole.OWNER
            )
    except IntegrityError:
        raise AlreadyInFamily("You already own or belong to a family") from None
    _user_audit(
        AuditAction.FAMILY_CREATED, actor_user_id=owner_user_id, group=group, metadata={"seats": seats}, request=request
    )
    return group


def _owned_group_locked(owner_user_id: uuid.UUID) -> FamilyGroup:
    group = FamilyGroup.objects.select_for_update().filter(owner_user_id=owner_user_id).first()
    if group is not None:
        return group
    if FamilyMembership.objects.filter(user_id=owner_user_id).exists():
        raise NotFamilyOwner("Only the family's owner may invite")
    raise FamilyNotFound("You have no family")


@transaction.atomic(durable=True)
def family_invitation_create(
    *, owner_user_id: uuid.UUID, email: str, request: HttpRequest | None = None
) -> tuple[FamilyInvitation, str]:
    """Invite `email` into the owner's family; returns the invitation and its token (shown once,
    stored only as a hash). Refused while the family is suspended or every seat is taken."""
    email = _normalise_email(email)
    group = _owned_group_locked(owner_user_id)
    seats = selectors.family_seats_of(owner_user_id=owner_user_id)
    if group.status == FamilyGroupStatus.SUSPENDED or seats == 0:
        raise FamilySuspended("The family plan is not active; nobody can be invited until it is")
    if _member_count(group) >= seats:
        raise NoSeatLeft(f"All {seats} seats are taken")
    if group.memberships.filter(email=email).exists():
        raise AlreadyInFamily(f"{email} is already in this family")
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    invitation = FamilyInvitation.objects.create(
        group=group,
        email=email,
        token_hash=_token_hash(token),
        invited_by_user_id=owner_user_id,
        created_at=now,
        expires_at=now + timedelta(hours=settings.FAMILY_INVITATION_TTL_HOURS),
    )
    _user_audit(
        AuditAction.FAMILY_INVITATION_CREATED,
        actor_user_id=owner_user_id,
        group=group,
        metadata={"invitation_id": str(invitation.id), "invitee_email": email},
        request=request,
    )
    return invitation, token


@transaction.atomic(durable=True)
def family_invitation_accept(
    *, token: str, user_id: uuid.UUID, email: str, request: HttpRequest | None = None
) -> FamilyMembership:
    """Join the family that sent the invitation: the caller's email must be the invited one; the
    invitation must be pending and unexpired; a seat must be free.

    Seats: the group row is locked before the members are counted, so of two accepts racing for the
    last seat the second counts the first's member and is refused.
    """
    found = FamilyInvitation.objects.filter(token_hash=_token_hash(token)).values_list("id", "group_id").first()
    if found is None:
        raise InvitationNotFound("No invitation has this token")
    invitation_id, group_id = found
    group = FamilyGroup.objects.select_for_update().get(id=group_id)
    invitation = FamilyInvitation.objects.select_for_update().get(id=invitation_id)
    if not email or _normalise_email(email) != invitation.email:
        raise InvitationEmailMismatch("This invitation was sent to another email address")
    if invitation.status == InvitationStatus.ACCEPTED:
        raise InvitationUsed("This invitation has already been used")
    now = timezone.now()
    if invitation.expires_at <= now:
        raise InvitationExpired("This invitation has expired; ask for a new one")
    seats = selectors.family_seats_of(owner_user_id=group.owner_user_id)
    if group.status == FamilyGroupStatus.SUSPENDED or seats == 0:
        raise FamilySuspended("The family plan is not active; nobody can join until it is")
    if FamilyMembership.objects.filter(user_id=user_id).exists():
        raise AlreadyInFamily("You already own or belong to a family")
    if _member_count(group) >= seats:
        raise NoSeatLeft(f"All {seats} seats of this family are taken")
    try:
        with transaction.atomic():
            membership = FamilyMembership.objects.create(
                group=group, user_id=user_id, email=invitation.email, role=MembershipRole.MEMBER, joined_at=now
            )
    except IntegrityError:  # joined another family concurrently: the unique user decides
        raise AlreadyInFamily("You already own or belong to a family") from None
    invitation.status, invitation.accepted_at, invitation.accepted_by_user_id = InvitationStatus.ACCEPTED, now, user_id
    invitation.save(update_fields=["status", "accepted_at", "accepted_by_user_id"])
    _user_audit(
        AuditAction.FAMILY_MEMBER_ADDED,
        actor_user_id=user_id,
        group=group,
        metadata={"user_id": str(user_id), "invitation_id": str(invitation.id)},
        request=request,
    )
    entitlements_refresh(user_ids={user_id})
    return membership


@transaction.atomic(durable=True)
def family_member_remove(
    *,
    member_user_id: uuid.UUID,
    actor_user_id: uuid.UUID | None = None,
    staff_id: str = "",
    request: HttpRequest | None = None,
) -> None:
    """Remove a member from their family: the owner removes, the member leaves, or staff removes
    (`staff_id`, from admin). Anyone else gets 404, as if there were no such member."""
    group_id = FamilyMembership.objects.filter(user_id=member_user_id).values_list("group_id", flat=True).first()
    if group_id is None:
        raise MemberNotFound("No such family member")
    group = FamilyGroup.objects.select_for_update().get(id=group_id)
    membership = FamilyMembership.objects.filter(group=group, user_id=member_user_id).first()
    allowed = bool(staff_id) or actor_user_id in (group.owner_user_id, member_user_id)
    if membership is None or not allowed:
        raise MemberNotFound("No such family member")
    if membership.role == MembershipRole.OWNER:
        raise OwnerCannotLeave("The owner cannot leave their own family")
    membership.delete()
    reason = "removed_by_staff" if staff_id else "left" if actor_user_id == member_user_id else "removed"
    audit.record(
        action=AuditAction.FAMILY_MEMBER_REMOVED,
        actor_type=ActorType.STAFF if staff_id else ActorType.USER,
        actor_id=staff_id or str(actor_user_id),
        target_type="family_group",
        target_id=str(group.id),
        metadata={"user_id": str(member_user_id), "reason": reason},
        request=request,
    )
    # The owner too (and through them every member): a freed seat goes to the next member in line.
    entitlements_refresh(user_ids={member_user_id, group.owner_user_id})
