"""The audit trail: append-only, hash-chained, pseudonymisation-ready.

Each row's `hash` covers its canonical content and the previous row's hash (`prev_hash`), in the order
of `seq`. Personal data (actor id, ip, user agent and personal metadata) is not hashed directly: the
chain covers `personal_digest = sha256(personal_salt + canonical personal JSON)`, so erasure can blank the
personal columns and the salt and keep the digest — the chain still verifies (see gdpr/audit.py).
"""

from typing import Any, NoReturn

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid6 import uuid7


class AuditAction(models.TextChoices):
    """Every auditable action, as a dotted name. Add members freely; never rename one (rows keep it).

    The column holds no database `choices` constraint on purpose, so adding a member needs no migration;
    `gdpr.audit.record` refuses anything that is not a member.
    """

    ADMIN_LOGIN = "admin.login"
    ADMIN_LOGOUT = "admin.logout"
    ADMIN_LOGIN_FAILED = "admin.login_failed"
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_PSEUDONYMISED = "audit.pseudonymised"
    ORDER_CREATED = "order.created"
    ORDER_FAILED = "order.failed"
    SUBSCRIPTION_UPDATED = "subscription.updated"
    SUBSCRIPTION_CANCEL_REQUESTED = "subscription.cancel_requested"
    PAYMENT_RECORDED = "payment.recorded"
    REFUND_REQUESTED = "refund.requested"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    CUSTOMER_UPDATED = "customer.updated"
    CUSTOMER_DELETED = "customer.deleted"
    WEBHOOK_REPLAYED = "webhook.replayed"
    WEBHOOK_IGNORED = "webhook.ignored"
    GDPR_EXPORT_REQUESTED = "gdpr.export.requested"
    GDPR_EXPORT_COMPLETED = "gdpr.export.completed"
    GDPR_EXPORT_DOWNLOADED = "gdpr.export.downloaded"
    GDPR_ERASURE_REQUESTED = "gdpr.erasure.requested"
    GDPR_ERASURE_COMPLETED = "gdpr.erasure.completed"
    GDPR_ERASURE_FAILED = "gdpr.erasure.failed"
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
        raise AuditTrailIsAppendOnly("audit events cannot be updated (use gdpr.services.audit_pseudonymise_actor)")

    def delete(self) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be deleted")

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events are appended one at a time by gdpr.audit.record")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be updated")

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be updated")

    def _pseudonymise(self, **kwargs: Any) -> int:
        """The one controlled update path (gdpr.services.audit_pseudonymise_actor); personal columns only."""
        allowed = {"actor_id", "ip", "user_agent", "personal", "personal_salt", "pseudonymised_at"}
        if not kwargs or set(kwargs) - allowed:
            raise AuditTrailIsAppendOnly(f"only personal columns may be pseudonymised, not {sorted(set(kwargs))}")
        return super().update(**kwargs)


class AuditEvent(models.Model):
    """One thing that happened, who did it, to what. Written by gdpr.audit.record only."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    seq = models.BigIntegerField(unique=True, editable=False)  # position in the chain, 1, 2, 3, ...
    occurred_at = models.DateTimeField(default=timezone.now, editable=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    action = models.CharField(max_length=64)  # an AuditAction value (see its docstring)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=255, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    metadata = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    # Personal columns: committed to through personal_digest, blanked (with the salt) on erasure.
    actor_id = models.CharField(max_length=255, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    personal = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    personal_salt = models.CharField(max_length=64, blank=True)
    personal_digest = models.CharField(max_length=64, editable=False)
    pseudonymised_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The chain.
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["actor_id"], name="audit_actor_idx"),
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["action", "occurred_at"], name="audit_action_idx"),
            models.Index(fields=["occurred_at"], name="audit_occurred_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(actor_type__in=ActorType.values), name="audit_actor_type_valid"),
            models.CheckConstraint(condition=Q(seq__gte=1), name="audit_seq_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_type}:{self.actor_id or '-'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditTrailIsAppendOnly("audit events cannot be updated")
        if not getattr(self, "_appending", False):
            raise AuditTrailIsAppendOnly("audit events are written by gdpr.audit.record only")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditTrailIsAppendOnly("audit events cannot be deleted")
