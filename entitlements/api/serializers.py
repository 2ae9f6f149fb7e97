"""The entitlement and family API's shapes (API.md)."""

import contextlib
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from rest_framework import serializers

from entitlements.models import FamilyInvitation, FamilyMembership
from entitlements.resolution import Entitlements, Source
from payments_project.inputs import StrictInput, StrictUUIDField

FEATURE_KEY_PATTERN = r"^[-a-zA-Z0-9_]{1,64}$"  # billing's Feature.key: a slug of at most 64
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # what str(uuid.UUID) writes
# Canonical ids joined by commas: a thousand checked in one match, not one call each.
_CANONICAL_UUIDS = re.compile(f"{_UUID}(?:,{_UUID})*")


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


class FeatureOutput(serializers.Serializer[Any]):
    key = serializers.CharField()
    source = serializers.ChoiceField(choices=[s.value for s in Source])  # type: ignore[assignment]
    expires_at = serializers.DateTimeField(
        allow_null=True, help_text="when this grant ends by itself; null while it renews"
    )


class EntitlementsOutput(serializers.Serializer[Any]):
    user_id = serializers.UUIDField()
    features = FeatureOutput(many=True)


def entitlements_body(entitlements: Entitlements) -> Mapping[str, Any]:
    """EntitlementsOutput's body, built by hand: this is the hot path and the shape is fixed."""
    return {
        "user_id": str(entitlements.user_id),
        "features": [
            {"key": feature.key, "source": feature.source.value, "expires_at": iso(feature.expires_at)}
            for feature in entitlements.features
        ],
    }


class EntitlementCheckOutput(serializers.Serializer[Any]):
    feature = serializers.CharField()
    entitled = serializers.BooleanField()


def _canonical_ids(data: list[Any]) -> bool:
    """Whether every item is a canonical UUID string (lower case, hyphens: what str(UUID) gives), checked
    in one match over the joined list rather than one call per item (a thousand ids a call)."""
    try:
        joined = ",".join(data)
    except TypeError:  # an item that is no string
        return False
    # As many ids as items (36 characters each, one comma between): no item hides a comma.
    return len(joined) == 37 * len(data) - 1 and _CANONICAL_UUIDS.fullmatch(joined) is not None


class _BoundedUUIDList(serializers.ListField):
    """A list of UUIDs, as canonical strings, whose length is checked before any item is parsed."""

    child = StrictUUIDField()

    def to_internal_value(self, data: Any) -> Any:
        limit = settings.ENTITLEMENTS_BULK_MAX_IDS
        if isinstance(data, list) and len(data) > limit:
            raise serializers.ValidationError(f"At most {limit} user ids per request, not {len(data)}.")
        if isinstance(data, list) and data and all(type(item) is str for item in data):
            # Canonical ids stay strings; others are parsed and written canonically, as UUIDField would
            # accept them. Either way without UUIDField's per-item machinery (a thousand ids a call); a
            # bad item goes the long way round, for its error.
            if _canonical_ids(data):
                return data
            with contextlib.suppress(ValueError):
                return [str(uuid.UUID(item)) for item in data]
        return [str(user_id) for user_id in super().to_internal_value(data)]


class BulkCheckInput(StrictInput):
    user_ids = _BoundedUUIDList(allow_empty=False)
    feature = serializers.RegexField(FEATURE_KEY_PATTERN, max_length=64)


_FEATURE_KEY = re.compile(FEATURE_KEY_PATTERN)


def bulk_check_input(data: Any) -> dict[str, Any]:
    """BulkCheckInput's validated data. The common body (other services send str(UUID)s and a slug) is
    recognised in a few whole-list operations, without the serializer's per-call field copies; anything
    else goes through BulkCheckInput, which names what is wrong or writes the ids canonically."""
    if type(data) is dict and data.keys() == {"user_ids", "feature"}:
        user_ids, feature = data["user_ids"], data["feature"]
        if (
            type(user_ids) is list
            and 0 < len(user_ids) <= settings.ENTITLEMENTS_BULK_MAX_IDS
            and type(feature) is str
            and _FEATURE_KEY.fullmatch(feature)
            and _canonical_ids(user_ids)
        ):
            return {"user_ids": user_ids, "feature": feature}
    body = BulkCheckInput(data=data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


class BulkCheckOutput(serializers.Serializer[Any]):
    results = serializers.DictField(child=serializers.BooleanField(), help_text="user id → entitled")


class InvitationInput(StrictInput):
    email = serializers.EmailField(max_length=254)


class InvitationAcceptInput(StrictInput):
    token = serializers.CharField(max_length=128, trim_whitespace=True)


class InvitationCreatedOutput(serializers.ModelSerializer[FamilyInvitation]):
    token = serializers.SerializerMethodField(help_text="shown once; the invited user accepts with it")

    class Meta:
        model = FamilyInvitation
        fields = ["id", "email", "token", "expires_at"]

    def get_token(self, invitation: FamilyInvitation) -> str:
        return str(self.context["token"])


class MemberOutput(serializers.ModelSerializer[FamilyMembership]):
    class Meta:
        model = FamilyMembership
        fields = ["user_id", "email", "role", "joined_at"]


class PendingInvitationOutput(serializers.ModelSerializer[FamilyInvitation]):
    class Meta:
        model = FamilyInvitation
        fields = ["id", "email", "expires_at"]


class FamilyOutput(serializers.Serializer[Any]):
    """selectors.FamilyDetail."""

    id = serializers.UUIDField()
    owner_user_id = serializers.UUIDField()
    status = serializers.CharField()
    seats = serializers.IntegerField(help_text="members the owner's family plan allows besides the owner (0: none)")
    members = MemberOutput(many=True)
    suspended = serializers.ListField(
        child=serializers.UUIDField(),
        help_text="members beyond the plan's seats (the most recent to join): no family features until a seat "
        "frees up (the owner removes someone, someone leaves) or the plan grows",
    )
    invitations = PendingInvitationOutput(many=True, help_text="pending invitations; listed to the owner only")
    created_at = serializers.DateTimeField()
