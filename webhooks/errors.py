from payments_project.errors import ValidationFailed


class WebhookRejected(ValidationFailed):
    """A delivery we refuse to store: bad or stale signature, or a malformed body. Always a 400."""

    code = "webhook_rejected"
    title = "Webhook rejected"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason  # a metric label: missing_signature, bad_signature, stale_timestamp, malformed
