import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from gdpr import audit
from gdpr.models import AuditEvent
from payments_project.write_batch import write_batch
from tasks.models import OutboxMessage
from tasks.outbox import emit

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
