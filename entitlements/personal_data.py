"""Entitlements' personal data for GDPR export and erasure (registered with gdpr.registry in apps.ready()).

Erasure, in one transaction (runs after billing's step, which ended the user's subscriptions):
- a family the user owns is dissolved (its members lose the family's features, and are told so through
  `entitlements.changed`); a membership elsewhere ends;
- invitations sent by the user, sent to one of their addresses or accepted by them are deleted;
- the user's entitlements are refreshed (their `entitlements.changed` goes out, their cache version is
  bumped on commit, so no cached grant survives), then their snapshot row is deleted.
"""

import uuid

from django.db import transaction
from django.db.models import Q

from entitlements.models import EntitlementSnapshot, FamilyGroup, FamilyInvitation, FamilyMembership, MembershipRole
from entitlements.services import entitlements_refresh
from gdpr import audit
from gdpr.registry import DataSubject, PersonalDataProvider, Tables, rows

# The invitation's token hash is a credential, not the user's data.
_INVITATION_SECRET_COLUMNS = ("token_hash",)


def entitlements_emails(*, user_id: uuid.UUID) -> set[str]:
    return set(FamilyMembership.objects.filter(user_id=user_id).exclude(email="").values_list("email", flat=True))


def _invitations_of(subject: DataSubject) -> Q:
    addresses = [email.strip().lower() for email in subject.emails]
    return Q(invited_by_user_id=subject.user_id) | Q(accepted_by_user_id=subject.user_id) | Q(email__in=addresses)


def entitlements_export(*, subject: DataSubject) -> Tables:
    groups = FamilyGroup.objects.filter(memberships__user_id=subject.user_id)
    return {
        "family_groups": rows(groups),
        "family_memberships": rows(FamilyMembership.objects.filter(user_id=subject.user_id)),
        # The rest of the family as the family view shows it to the user (no one else's address).
        "family_members": [
            dict(member)
            for member in FamilyMembership.objects.filter(group__in=groups)
            .exclude(user_id=subject.user_id)
            .order_by("joined_at", "id")
            .values("group_id", "user_id", "role", "joined_at")
        ],
        "family_invitations": rows(
            FamilyInvitation.objects.filter(_invitations_of(subject)), exclude=_INVITATION_SECRET_COLUMNS
        ),
        "entitlement_snapshots": rows(EntitlementSnapshot.objects.filter(user_id=subject.user_id)),
    }


@transaction.atomic
def entitlements_erase(*, subject: DataSubject) -> None:
    user_id = subject.user_id
    affected = {user_id}
    # Lock order of entitlements: family group rows → invitation → snapshot rows.
    owned = FamilyGroup.objects.select_for_update().filter(owner_user_id=user_id).first()
    if owned is not None:
        members = set(owned.memberships.filter(role=MembershipRole.MEMBER).values_list("user_id", flat=True))
        affected |= members
        audit.record(
            action=audit.AuditAction.FAMILY_DISSOLVED,
            actor_type=audit.ActorType.SYSTEM,
            target_type="family_group",
            target_id=str(owned.id),
            metadata={"reason": "owner_erased", "members": len(members)},
        )
        owned.delete()  # its memberships and invitations go with it
    membership = FamilyMembership.objects.filter(user_id=user_id).select_related("group").first()
    if membership is not None:
        group = FamilyGroup.objects.select_for_update().filter(id=membership.group_id).first()
        membership.delete()
        if group is not None:
            affected.add(group.owner_user_id)  # the seat they held goes to the next member in line
        audit.record(
            action=audit.AuditAction.FAMILY_MEMBER_REMOVED,
            actor_type=audit.ActorType.SYSTEM,
            target_type="family_group",
            target_id=str(membership.group_id),
            metadata={"user_id": str(user_id), "reason": "erased"},
        )
    FamilyInvitation.objects.filter(_invitations_of(subject)).delete()
    entitlements_refresh(user_ids=affected)
    EntitlementSnapshot.objects.filter(user_id=user_id).delete()


PROVIDER = PersonalDataProvider(
    name="entitlements",
    order=20,
    models=(FamilyGroup, FamilyMembership, FamilyInvitation, EntitlementSnapshot),
    export=entitlements_export,
    erase=entitlements_erase,
    emails=entitlements_emails,
)
