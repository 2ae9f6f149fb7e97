"""The audit trail: append-only and hash-chained, with people kept out of the chain.

Each row's `hash` covers its canonical content and the previous row's hash (`prev_hash`), in the order
of `seq`. A row is written unsealed (no seq, prev_hash or hash) in its change's transaction and chained
soon after by the sealer (gdpr.audit.audit_seal_pending), so audited writes never wait on each other.
A data subject appears in the hashed columns only as their stable pseudonym; everything else personal
(ip, user agent, addresses, ...) sits beside the row in AuditEventPersonal, outside the chain, where
erasure deletes it. So nothing in the trail is ever updated but by sealing (see gdpr/audit.py).

Data-subject requests (export, erasure) and the erasure's steps follow the audit trail below.
"""

from typing import Any, NoReturn

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid6 import uuid7

from tasks.models import DurableJob, JobStatuses, RetryPolicy


class AuditAction(models.TextChoices):
    """Every auditable action, as a dotted name. Add members freely; never rename one (rows keep it).

    The column holds no database `choices` constraint on purpose, so adding a member needs no migration;
    `gdpr.audit.record` refuses anything that is not a member.
    """

    ADMIN_LOGIN = "admin.login"
    ADMIN_LOGOUT = "admin.logout"
    ADMIN_LOGIN_FAILED = "admin.login_failed"
    ADMIN_MFA_ENROLLED = "admin.mfa_enrolled"
    ADMIN_MFA_VERIFIED = "admin.mfa_verified"  # the second factor: the sign-in is complete
    ADMIN_MFA_FAILED = "admin.mfa_failed"
    ADMIN_RECOVERY_CODES_ISSUED = "admin.recovery_codes_issued"
    ADMIN_LOCKED_OUT = "admin.locked_out"
    ADMIN_UNLOCKED = "admin.unlocked"
    ADMIN_EXPORTED = "admin.exported"  # a CSV export of payments, refunds, subscriptions, ...
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_PERSONAL_ERASED = "audit.personal_erased"
    AUDIT_PSEUDONYMISED = "audit.pseudonymised"  # no longer written (rows from before the side table keep it)
    ORDER_CREATED = "order.created"
    ORDER_FAILED = "order.failed"
    SUBSCRIPTION_UPDATED = "subscription.updated"
    SUBSCRIPTION_CANCEL_REQUESTED = "subscription.cancel_requested"
    SUBSCRIPTION_RESUME_REQUESTED = "subscription.resume_requested"
    SUBSCRIPTION_CHANGE_REQUESTED = "subscription.change_requested"
    BILLING_PORTAL_OPENED = "billing_portal.opened"
    PAYMENT_RECORDED = "payment.recorded"
    DISPUTE_RECORDED = "dispute.recorded"
    REFUND_REQUESTED = "refund.requested"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    CUSTOMER_UPDATED = "customer.updated"
    CUSTOMER_DELETED = "customer.deleted"
    WEBHOOK_REPLAYED = "webhook.replayed"
    WEBHOOK_IGNORED = "webhook.ignored"
    OUTBOX_REPLAYED = "outbox.replayed"
    GDPR_EXPORT_REQUESTED = "gdpr.export.requested"
    GDPR_EXPORT_COMPLETED = "gdpr.export.completed"
    GDPR_EXPORT_DOWNLOADED = "gdpr.export.downloaded"
    GDPR_ERASURE_REQUESTED = "gdpr.erasure.requested"
    GDPR_ERASURE_COMPLETED = "gdpr.erasure.completed"
    GDPR_ERASURE_FAILED = "gdpr.erasure.failed"
    GDPR_EXPORT_FAILED = "gdpr.export.failed"
    GDPR_EXPORT_EXPIRED = "gdpr.export.expired"
    GDPR_REQUEST_RETRIED = "gdpr.request.retried"
    GDPR_REQUEST_CANCELED = "gdpr.request.canceled"
    CUSTOMER_PSEUDONYMISED = "customer.pseudonymised"
    FAMILY_DISSOLVED = "family.dissolved"
    ENTITLEMENTS_CHANGED = "entitlements.changed"
    FAMILY_CREATED = "family.created"
    FAMILY_MEMBER_ADDED = "family.member_added"
    FAMILY_MEMBER_REMOVED = "family.member_removed"
    FAMILY_INVITATION_CREATED = "family.invitation_created"
    FAMILY_SUSPENDED = "family.suspended"
    FAMILY_REACTIVATED = "family.reactivated"
    RECONCILIATION_RESOLVED = "reconciliation.resolved"
    RECONCILIATION_RESYNCED = "reconciliation.resynced"


class ActorType(models.TextChoices):
    USER = "user", "User"
    SERVICE = "service", "Service"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"
    PROVIDER = "provider", "Provider"


class AuditTrailIsAppendOnly(Exception):
    """Raised for any attempt to change or remove an audit event through the ORM."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be updated")

    def delete(self) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be deleted")

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events are appended one at a time by gdpr.audit.record")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be updated")

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be updated")


class AuditEvent(models.Model):
    """One thing that happened, who did it, to what. Written by gdpr.audit.record only; every column is
    hashed. Its personal part, if any, is `event.personal` (AuditEventPersonal)."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Position in the chain, 1, 2, 3, ...; null until the sealer chains the row (with prev_hash and hash).
    seq = models.BigIntegerField(unique=True, null=True, editable=False)
    occurred_at = models.DateTimeField(default=timezone.now, editable=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=255, blank=True)  # a user actor's pseudonym; staff pk, service, ...
    action = models.CharField(max_length=64)  # an AuditAction value (see its docstring)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=255, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    metadata = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # The chain.
    # Null, not '', until sealed: many unsealed rows under the unique `hash`.
    prev_hash = models.CharField(max_length=64, null=True, editable=False)  # noqa: DJ001
    hash = models.CharField(max_length=64, null=True, editable=False)  # noqa: DJ001 (unique: Meta)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["actor_id"], name="audit_actor_idx"),
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["action", "occurred_at"], name="audit_action_idx"),
            models.Index(fields=["occurred_at"], name="audit_occurred_idx"),
            # The sealer's queue, in sealing order; empty most of the time.
            models.Index(fields=["occurred_at", "id"], condition=Q(seq__isnull=True), name="audit_unsealed_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(actor_type__in=ActorType.values), name="audit_actor_type_valid"),
            models.CheckConstraint(condition=Q(seq__gte=1), name="audit_seq_positive"),
            # A constraint rather than unique=True, which on PostgreSQL also adds a LIKE index nothing uses.
            models.UniqueConstraint(fields=["hash"], name="gdpr_auditevent_hash_key"),
            # Sealed means all three chain columns, unsealed none of them.
            models.CheckConstraint(
                condition=Q(seq__isnull=True, prev_hash__isnull=True, hash__isnull=True)
                | Q(seq__isnull=False, prev_hash__isnull=False, hash__isnull=False),
                name="audit_sealed_whole",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq or '(unsealed)'} {self.action} by {self.actor_type}:{self.actor_id or '-'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditTrailIsAppendOnly("audit events cannot be updated")
        if not getattr(self, "_appending", False):
            raise AuditTrailIsAppendOnly("audit events are written by gdpr.audit.record only")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be deleted")


class AuditEventPersonal(models.Model):
    """The personal part of one audit event, outside the hash chain: what erasure deletes.

    Written with its event by gdpr.audit.record (only when there is something to keep), never updated
    (a trigger refuses it), deleted by erasure. Not tamper-evident: the chain does not cover it.
    """

    event = models.OneToOneField(
        AuditEvent, primary_key=True, on_delete=models.PROTECT, related_name="personal", editable=False
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    metadata = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)  # PERSONAL_METADATA_KEYS

    class Meta:
        verbose_name = "audit event's personal data"
        verbose_name_plural = "audit events' personal data"

    def __str__(self) -> str:
        return f"personal data of audit event {self.event_id}"


# --- Data-subject requests: export (GDPR Art. 15, 20) and erasure (Art. 17) -----------------------------


class RequestKind(models.TextChoices):
    EXPORT = "export"
    ERASURE = "erasure"


class RequestStatus(models.TextChoices):
    PENDING = "pending"  # waiting for a worker (first run, or a retry due at next_attempt_at)
    RUNNING = "running"  # a worker holds it until lease_until
    COMPLETED = "completed"
    FAILED = "failed"  # out of attempts or a permanent error: `last_error` says why; staff may retry
    CANCELED = "canceled"  # by compliance staff
    EXPIRED = "expired"  # an export whose file was deleted after its download window


class StepStatus(models.TextChoices):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


# The requests that block another of the same kind for the same person. A failed erasure stays open:
# it is a legal obligation not yet met, and compliance retries it rather than the user starting over.
OPEN_REQUEST = Q(status__in=[RequestStatus.PENDING, RequestStatus.RUNNING]) | Q(
    kind=RequestKind.ERASURE, status=RequestStatus.FAILED
)


class DataSubjectRequest(DurableJob):
    """A user's request for their data or for its erasure, processed by a Celery job on the gdpr queue.

    `subject` is the user's stable pseudonym (gdpr.registry.pseudonym_for): ownership is checked by it,
    so a user still finds their erasure request after it removed their id from this row too.
    """

    Kind = RequestKind
    Status = RequestStatus
    statuses = JobStatuses(
        waiting=(RequestStatus.PENDING,),
        running=RequestStatus.RUNNING,
        retrying=RequestStatus.PENDING,
        dead=RequestStatus.FAILED,
    )
    # Attempts count per erasure step (ErasureStep.attempts) and per export.
    retry_policy = RetryPolicy(max_attempts=8, base_seconds=30, max_seconds=3600)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    kind = models.CharField(max_length=16, choices=RequestKind.choices)
    status = models.CharField(max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    subject = models.CharField(max_length=64, db_index=True)
    # Who, while the request needs it: an erasure blanks these when it completes.
    user_id = models.UUIDField(null=True, blank=True)
    email = models.EmailField(blank=True)  # from the token, to find data held under the address
    known_emails = models.JSONField(default=list, blank=True)  # every address the providers knew (erasure)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Exports: the archive in STORAGES["gdpr_exports"], downloadable until expires_at.
    file_name = models.CharField(max_length=255, blank=True)
    file_size = models.PositiveBigIntegerField(null=True, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Erasures: the outbox message announcing completion. It carries the user id for the services that
    # must erase too; the sweeper replaces that id once the message is published.
    completion_event_id = models.UUIDField(null=True, blank=True)
    completion_event_redacted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "kind"], condition=OPEN_REQUEST, name="gdpr_request_one_open"),
            models.CheckConstraint(condition=Q(kind__in=RequestKind.values), name="gdpr_request_kind_valid"),
            models.CheckConstraint(condition=Q(status__in=RequestStatus.values), name="gdpr_request_status_valid"),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="gdpr_request_due_idx"),
            models.Index(fields=["status", "expires_at"], name="gdpr_request_expiry_idx"),
            models.Index(fields=["user_id"], name="gdpr_request_user_idx"),
        ]
        verbose_name = "data-subject request"

    def __str__(self) -> str:
        # Never the user id: the admin's change log keeps this text after an erasure.
        return f"{self.kind} {self.id} ({self.status})"


class ErasureStep(models.Model):
    """One provider's part of an erasure; unique per (request, provider), so a rerun skips finished steps."""

    Status = StepStatus

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    request = models.ForeignKey(DataSubjectRequest, on_delete=models.CASCADE, related_name="steps")
    provider = models.CharField(max_length=64)
    order = models.IntegerField()
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "provider"], name="gdpr_step_one_per_provider"),
            models.CheckConstraint(condition=Q(status__in=StepStatus.values), name="gdpr_step_status_valid"),
        ]
        ordering = ["order", "provider"]

    def __str__(self) -> str:
        return f"{self.provider} ({self.status})"
