"""Every Stripe event type the contract names (API.md, Webhooks) has a handler."""

import re
from pathlib import Path

from webhooks.handlers import HANDLERS

# The contract lives next to the checkouts (../shared/API.md from the repository, wherever it is checked out);
# a clone with no shared/ above it reads docs/API.md, the copy this code was built to.
API_MD = next(
    (
        folder / "shared" / "API.md"
        for folder in Path(__file__).resolve().parents
        if (folder / "shared" / "API.md").exists()
    ),
    Path(__file__).resolve().parents[2] / "docs" / "API.md",
)


def contract_types(text: str) -> set[str]:
    """The webhooks section's list, alternatives expanded: `a.b.c|d` is `a.b.c` and `a.b.d`,
    `a.b_c|d` is `a.b_c` and `a.b_d`."""
    section = text.split("Event types handled at least:", 1)[1].split("Stripe objects link back", 1)[0]
    names: set[str] = set()
    for written in re.findall(r"`([a-z_.|]+)`", section):
        first, *others = written.split("|")
        names.add(first)
        for other in others:
            if "." in other:  # a whole name
                names.add(other)
            elif "_" in first.rsplit(".", 1)[1] and "_" not in other:  # async_payment_succeeded|failed
                names.add(f"{first.rsplit('_', 1)[0]}_{other}")
            else:  # created|updated
                names.add(f"{first.rsplit('.', 1)[0]}.{other}")
    return names


def test_the_contracts_event_types_all_have_a_handler() -> None:
    text = API_MD.read_text()
    named = contract_types(text) if text else set()
    expected = {
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "invoice.payment_action_required",
        "charge.dispute.created",
        "charge.dispute.closed",
        "customer.subscription.trial_will_end",
        "invoice.payment_succeeded",
        "invoice.created",
        "invoice.finalized",
        "invoice.updated",
        "invoice.voided",
        "invoice.marked_uncollectible",
    }

    assert (named | expected) - set(HANDLERS) == set()
