"""The beat schedule, all of it (seconds unless a crontab): the source of truth that beat's database scheduler
is synced from at start (tasks/beat.py). Plain data, so the settings (Sentry Crons) can read it too."""

from typing import Any

from celery.schedules import crontab

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "outbox-dispatch": {"task": "outbox.dispatch", "schedule": 10.0},
    "outbox-measure": {"task": "outbox.measure", "schedule": 30.0},
    "outbox-prune": {"task": "outbox.prune", "schedule": crontab(minute=41)},
    "webhooks-sweep": {"task": "webhooks.sweep", "schedule": 30.0},
    "billing-resolve-abandoned-orders": {"task": "billing.resolve_abandoned_orders", "schedule": 300.0},
    "billing-resolve-stuck-refunds": {"task": "billing.resolve_stuck_refunds", "schedule": 300.0},
    "entitlements-refresh-lapsed": {"task": "entitlements.refresh_lapsed", "schedule": 60.0},
    "reconciliation-events-gap-fill": {"task": "reconciliation.events_gap_fill", "schedule": 300.0},
    "reconciliation-state-compare": {"task": "reconciliation.state_compare", "schedule": crontab(hour=3, minute=17)},
    "gdpr-sweep": {"task": "gdpr.sweep", "schedule": 60.0},
    "gdpr-audit-seal": {"task": "gdpr.audit_seal", "schedule": 5.0},
    "gdpr-purge-exports": {"task": "gdpr.purge_exports", "schedule": 900.0},
    "gdpr-alert-overdue": {"task": "gdpr.alert_overdue", "schedule": crontab(minute=7)},
    "webhooks-purge-raw-payloads": {"task": "webhooks.purge_raw_payloads", "schedule": crontab(hour=4, minute=23)},
    "webhooks-prune-inbox": {"task": "webhooks.prune_inbox", "schedule": crontab(hour=4, minute=41)},
}


def sub_minute_entries() -> list[str]:
    """Entries Sentry Crons cannot monitor (intervals under a minute, or not whole minutes); their delays are
    alerted on from Prometheus (payments_task_last_success_timestamp_seconds)."""
    return [
        name
        for name, entry in BEAT_SCHEDULE.items()
        if isinstance(entry["schedule"], float) and (entry["schedule"] < 60 or entry["schedule"] % 60)
    ]
