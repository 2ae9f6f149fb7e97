"""Family groups (one per owner), their members and invitations, and each user's entitlement snapshot.

Users are the JWT's `sub` UUIDs (no user table). The database enforces the structural rules:
- a user is in at most one family, as owner or member (FamilyMembership.user_id is unique, and the
  owner has a membership row of their own);
- one group per owner, one owner row per group;
- an invitation token is stored only as its sha256, unique.
Seats are enforced by locking the group row before counting (services.family_invitation_accept).
"""

from django.db import models
from django.db.models import Q
from django.utils import timezone
from uuid6 import uuid7


class FamilyGroupStatus(models.TextChoices):
    ACTIVE = "active"
    # The owner has no access-granting family plan (lapsed, or downgraded to a non-family plan):
    # members stay, but get no family features and nobody can join until the plan is back.
    SUSPENDED = "suspended"


class MembershipRole(models.TextChoices):
    OWNER = "owner"
    MEMBER = "member"


class InvitationStatus(models.TextChoices):
    PENDING = "pending"  # usable until expires_at
    ACCEPTED = "accepted"


class FamilyGroup(models.Model):
    Status = FamilyGroupStatus

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    owner_user_id = models.UUIDField(unique=True)
    status = models.CharField(max_length=16, choices=FamilyGroupStatus.choices, default=FamilyGroupStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=FamilyGroupStatus.values), name="entitlements_family_group_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"family of {self.owner_user_id} ({self.status})"


class FamilyMembership(models.Model):
    Role = MembershipRole

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    group = models.ForeignKey(FamilyGroup, on_delete=models.CASCADE, related_name="memberships")
    user_id = models.UUIDField()
    email = models.EmailField(blank=True)  # as the user's token gave it when they joined (lower case)
    role = models.CharField(max_length=8, choices=MembershipRole.choices)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # The rule "a user belongs to at most one family", owners included.
            models.UniqueConstraint(fields=["user_id"], name="entitlements_membership_one_family_per_user"),
            models.UniqueConstraint(
                fields=["group"], condition=Q(role=MembershipRole.OWNER), name="entitlements_membership_one_owner"
            ),
            models.CheckConstraint(
                condition=Q(role__in=MembershipRole.values), name="entitlements_membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} ({self.role})"


class FamilyInvitation(models.Model):
    Status = InvitationStatus

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    group = models.ForeignKey(FamilyGroup, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()  # lower case; the accepting user's token must carry the same
    token_hash = models.CharField(max_length=64, unique=True)  # sha256 hex; the token itself is never stored
    status = models.CharField(max_length=16, choices=InvitationStatus.choices, default=InvitationStatus.PENDING)
    invited_by_user_id = models.UUIDField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by_user_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=InvitationStatus.values), name="entitlements_invitation_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(status=InvitationStatus.PENDING, accepted_at__isnull=True, accepted_by_user_id__isnull=True)
                | Q(status=InvitationStatus.ACCEPTED, accepted_at__isnull=False, accepted_by_user_id__isnull=False),
                name="entitlements_invitation_accepted_has_who_and_when",
            ),
        ]

    def __str__(self) -> str:
        return f"invitation to {self.email} ({self.status})"


class EntitlementSnapshot(models.Model):
    """The feature keys a user was last known to have: the baseline of `entitlements.changed` events."""

    user_id = models.UUIDField(primary_key=True)
    features = models.JSONField(default=list)  # sorted feature keys
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return str(self.user_id)
