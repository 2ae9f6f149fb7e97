"""Billing's signals, for the apps above it (billing imports none of them).

`billing_changed_by_client`: sent inside the transaction of a client action that changed what users are
entitled to at once (an upgrade), with `user_ids`. Entitlements refreshes them in that transaction, as the
webhook processor does after a change Stripe reports.
"""

from django.dispatch import Signal

billing_changed_by_client = Signal()  # kwargs: user_ids (set of UUIDs)
