"""Links from admin to the same object in Stripe's dashboard ("open in Stripe"), picked by id prefix.

Test-mode deployments (STRIPE_LIVEMODE false) link to the dashboard's test view.
"""

from django.conf import settings
from django.utils.html import format_html_join
from django.utils.safestring import SafeString, mark_safe

# Stripe id prefix -> the dashboard page that shows such an object.
_PAGES = {
    "cus": "customers",
    "sub": "subscriptions",
    "pi": "payments",
    "ch": "payments",
    "py": "payments",
    "in": "invoices",
    "re": "refunds",
    "price": "prices",
    "prod": "products",
    "evt": "events",
    "cs": "checkout/sessions",
    "dp": "disputes",
    "du": "disputes",
}


def stripe_dashboard_url(stripe_id: str | None) -> str | None:
    """The dashboard URL of a Stripe object, or None for an empty or unknown kind of id."""
    prefix, _, rest = (stripe_id or "").partition("_")
    page = _PAGES.get(prefix)
    if not page or not rest:
        return None
    mode = "" if settings.STRIPE_LIVEMODE else "test/"
    return f"{settings.STRIPE_DASHBOARD_URL}/{mode}{page}/{stripe_id}"


def stripe_links(*stripe_ids: str | None) -> SafeString:
    """HTML: one "open in Stripe" link per known id, each labelled with its id (empty when there is none)."""
    links = [(url, stripe_id) for stripe_id in stripe_ids if stripe_id and (url := stripe_dashboard_url(stripe_id))]
    return format_html_join(
        mark_safe("<br>"),
        '<a href="{}" target="_blank" rel="noopener noreferrer" title="Open in Stripe">{} ↗</a>',
        links,
    )
