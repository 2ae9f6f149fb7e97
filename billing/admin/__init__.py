"""Finance's admin: find customers, orders, subscriptions, payments, refunds, invoices and disputes; refund;
export for month-end.

Everything Stripe owns is read-only here (it changes through webhooks). Money actions (refunds, exports)
are for the finance role only and go through the same services as the API, audited. List pages select
their related rows in the page query and skip the second full count, so they stay fast with hundreds of
thousands of payments.
"""

from billing.admin import catalog, customers, invoices, payments, refunds  # noqa: F401 - each module registers its admins
