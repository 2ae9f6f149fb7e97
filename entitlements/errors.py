"""Entitlement and family errors: stable codes, rendered as problem+json (payments_project.errors)."""

from payments_project.errors import Conflict, Forbidden, NotFound


class FamilyPlanRequired(Forbidden):
    code = "family_plan_required"
    title = "A family plan is required"


class NotFamilyOwner(Forbidden):
    code = "not_family_owner"
    title = "Only the family's owner may do this"


class InvitationEmailMismatch(Forbidden):
    code = "invitation_email_mismatch"
    title = "The invitation is for another email address"


class FamilyNotFound(NotFound):
    code = "family_not_found"
    title = "No family"


class InvitationNotFound(NotFound):
    code = "invitation_not_found"
    title = "No such invitation"


class MemberNotFound(NotFound):
    code = "member_not_found"
    title = "No such family member"


class AlreadyInFamily(Conflict):
    code = "already_in_family"
    title = "Already in a family"


class NoSeatLeft(Conflict):
    code = "no_seat_left"
    title = "No seat left in this family"


class FamilySuspended(Conflict):
    code = "family_suspended"
    title = "The family is suspended"


class InvitationExpired(Conflict):
    code = "invitation_expired"
    title = "The invitation has expired"


class InvitationUsed(Conflict):
    code = "invitation_used"
    title = "The invitation has already been used"


class OwnerCannotLeave(Conflict):
    code = "owner_cannot_leave"
    title = "The owner cannot leave their own family"
