"""GDPR retries after a second or two: the `quick_retries` fixture uses them in the test process, and a
worker started with `include="tests.gdpr.quick_retries"` in its processes."""

from dataclasses import replace
from typing import Any

from celery.signals import worker_process_init

from gdpr.models import DataSubjectRequest

QUICK_RETRIES = replace(DataSubjectRequest.retry_policy, base_seconds=1, max_seconds=2)


@worker_process_init.connect
def _quick_retries_in_this_worker(**_: Any) -> None:
    DataSubjectRequest.retry_policy = QUICK_RETRIES
