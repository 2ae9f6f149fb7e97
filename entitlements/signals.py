"""Entitlements follow billing changes that do not come through the webhook processor (billing.signals)."""

import uuid
from typing import Any

from django.dispatch import receiver

from billing.signals import billing_changed_by_client
from entitlements.services import entitlements_refresh


@receiver(billing_changed_by_client, dispatch_uid="entitlements.refresh_on_billing_change")
def _refresh(sender: Any, user_ids: set[uuid.UUID], **kwargs: Any) -> None:
    entitlements_refresh(user_ids=user_ids)
