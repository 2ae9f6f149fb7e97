"""The gdpr app's writes, by use case; import them from here.

- `data_requests`: a data subject's export or erasure request is opened, retried or canceled by
  compliance staff, swept and watched by beat (`_shared` holds the claim and failure policy they share).
- `export`, `erasure`: run one request. Export and erasure go through the providers in gdpr.registry
  (each app registers its own); this package imports no other app.
- `audit_trail`: staff sessions, and erasing a subject's personal side data (the chain holds pseudonyms).
  The audit trail itself is appended by gdpr.audit.record.

Lock order: a request row, then its step rows.
"""

from gdpr.services._shared import Outcome
from gdpr.services.audit_trail import audit_personal_erase, audit_staff_session
from gdpr.services.data_requests import (
    data_request_cancel,
    data_request_create,
    data_request_retry,
    data_requests_alert_overdue,
    data_requests_sweep,
)
from gdpr.services.erasure import erasure_process
from gdpr.services.export import (
    EXPORT_STORAGE,
    export_download,
    export_download_filename,
    export_process,
    exports_purge,
)

__all__ = [
    "EXPORT_STORAGE",
    "Outcome",
    "audit_personal_erase",
    "audit_staff_session",
    "data_request_cancel",
    "data_request_create",
    "data_request_retry",
    "data_requests_alert_overdue",
    "data_requests_sweep",
    "erasure_process",
    "export_download",
    "export_download_filename",
    "export_process",
    "exports_purge",
]
