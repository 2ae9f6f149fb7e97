"""gdpr's errors: stable codes, rendered as problem+json by payments_project.errors."""

from payments_project.errors import ApplicationError, Conflict


class ExportNotReady(Conflict):
    code = "export_not_ready"
    title = "The export is not ready"


class ExportExpired(ApplicationError):
    """The download window is over (or the export was withdrawn): the file is gone; request a new export."""

    status_code = 410
    code = "export_expired"
    title = "The export has expired"


class ErasureInProgress(Conflict):
    code = "erasure_in_progress"
    title = "An erasure of your data is in progress"
