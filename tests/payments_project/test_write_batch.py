import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing.models import Subscription
from gdpr import audit
from gdpr.models import AuditEvent
from payments_project.write_batch import WriteBatchFailed, write_batch
from tasks.models import OutboxMessage
from tasks.outbox import emit
from tests.billing.factories import SubscriptionFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _record(n: int) -> None:
    audit.record(
        action=audit.AuditAction.SUBSCRIPTION_UPDATED,
        actor_type=audit.ActorType.PROVIDER,
        actor_id="stripe",
        target_type="subscription",
        target_id=f"sub_{n}",
        metadata={"n": n},
    )
    emit("subscription.updated", f"subscription:{n}", {"n": n})


def test_a_batch_appends_its_audit_events_and_outbox_messages_in_one_insert_each_in_its_transaction() -> None:
    # when three changes are recorded in a batch
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), write_batch():
        for n in range(3):
            _record(n)
        assert AuditEvent.objects.count() == 0  # not yet: at the end of the batch
    # then each kind of row is one INSERT, committed with the transaction, in the order recorded
    inserts = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("INSERT")]
    assert len(inserts) == 2
    assert [event.target_id for event in AuditEvent.objects.order_by("id")] == ["sub_0", "sub_1", "sub_2"]
    assert list(OutboxMessage.objects.order_by("id").values_list("subject", flat=True)) == [
        "subscription:0",
        "subscription:1",
        "subscription:2",
    ]


def test_what_a_savepoint_inside_the_batch_writes_rolls_back_with_it() -> None:
    # when a change recorded in a savepoint fails, between two that do not
    with transaction.atomic(), write_batch():
        _record(0)
        with pytest.raises(RuntimeError), transaction.atomic():
            _record(1)
            raise RuntimeError("this change fails")
        _record(2)
    # then only the failed one's rows are gone
    assert sorted(AuditEvent.objects.values_list("target_id", flat=True)) == ["sub_0", "sub_2"]
    assert sorted(OutboxMessage.objects.values_list("subject", flat=True)) == ["subscription:0", "subscription:2"]


def test_a_batch_that_fails_writes_nothing() -> None:
    with pytest.raises(RuntimeError), transaction.atomic(), write_batch():
        _record(0)
        raise RuntimeError("the change fails")

    assert AuditEvent.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


def _subscriptions(n: int) -> list[Subscription]:
    return [SubscriptionFactory(status="incomplete") for _ in range(n)]


def test_consecutive_row_updates_in_a_batch_are_one_statement_that_the_next_statement_reads() -> None:
    from billing.services._shared import update_fields

    subscriptions = _subscriptions(3)
    # when three rows are updated in a batch, one after the other, then read
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), write_batch():
        for subscription in subscriptions:
            update_fields(subscription, {"status": "active"})
        seen = set(Subscription.objects.values_list("status", flat=True))
    # then the read saw them, and they went as one UPDATE, before it
    assert seen == {"active"}
    updates = [query["sql"] for query in queries.captured_queries if 'UPDATE "billing_subscription"' in query["sql"]]
    assert len(updates) == 1
    assert set(Subscription.objects.values_list("status", flat=True)) == {"active"}


def test_a_row_updated_twice_in_a_batch_keeps_its_last_values() -> None:
    from billing.services._shared import update_fields

    [subscription] = _subscriptions(1)
    with transaction.atomic(), write_batch():
        update_fields(subscription, {"status": "active", "cancel_at_period_end": True})
        update_fields(subscription, {"status": "past_due"})

    subscription.refresh_from_db()
    assert (subscription.status, subscription.cancel_at_period_end) == ("past_due", True)


def test_a_row_update_in_a_savepoint_rolled_back_inside_the_batch_is_gone_and_the_others_stay() -> None:
    from billing.services._shared import update_fields

    first, failed, last = _subscriptions(3)
    with transaction.atomic(), write_batch():
        update_fields(first, {"status": "active"})
        with pytest.raises(RuntimeError), transaction.atomic():
            update_fields(failed, {"status": "active"})
            raise RuntimeError("this change fails")
        update_fields(last, {"status": "active"})

    statuses = {s.pk: s.status for s in Subscription.objects.all()}
    assert statuses == {first.pk: "active", failed.pk: "incomplete", last.pk: "active"}


def test_a_waiting_update_that_fails_is_raised_as_the_batch_s_not_the_next_statement_s() -> None:
    from billing.services._shared import update_fields

    [subscription] = _subscriptions(1)
    with pytest.raises(WriteBatchFailed), transaction.atomic(), write_batch():
        update_fields(subscription, {"status": "not-a-status"})  # the status check constraint refuses it
        Subscription.objects.count()  # the statement that sends it

    assert Subscription.objects.get().status == "incomplete"
