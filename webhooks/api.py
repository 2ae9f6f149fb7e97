"""POST /webhooks/stripe/: verify, store once, answer fast. Processing happens in a worker."""

import json

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from payments_project.errors import PayloadTooLarge, UnsupportedMediaType
from payments_project.ratelimit import check_batched, check_rate_limit
from webhooks import metrics
from webhooks.errors import WebhookRejected
from webhooks.services import StripeEnvelope, stripe_event_parse, webhook_event_receive
from webhooks.signature import stripe_signature_verify

log = structlog.get_logger(__name__)


@csrf_exempt  # authenticated by the Stripe signature, not a session
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    # Two budgets per client IP: refused deliveries count in `webhook_rejected` and accepted ones in
    # `webhook`, so unsigned junk (from anyone, even behind the same address) never spends what
    # Stripe's genuine deliveries need. The signature is checked first: an HMAC is cheap.
    try:
        envelope = _verified_envelope(request)
    except (WebhookRejected, UnsupportedMediaType, PayloadTooLarge):
        check_rate_limit(request, "webhook_rejected")
        raise
    # Generous (Stripe sends bursts) and per IP: its hits go to Redis in batches, so most deliveries cost no
    # round trip (issue 17); refused ones above are counted one by one.
    check_batched(request, "webhook")
    duplicate = webhook_event_receive(envelope=envelope, raw_body=request.body.decode("utf-8"))
    return HttpResponse(_ANSWERS[duplicate], content_type="application/json")


# The two answers, encoded once: JSON-encoding one per delivery was a fiftieth of its CPU (issue 17).
_ANSWERS = {duplicate: json.dumps({"received": True, "duplicate": duplicate}).encode() for duplicate in (False, True)}


def _verified_envelope(request: HttpRequest) -> StripeEnvelope:
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Stripe webhooks are application/json")
    limit = settings.WEBHOOK_MAX_BODY_BYTES
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit or len(request.body) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit // 1024} KiB")
    try:
        # META, not request.headers: that would copy every header of the request to read one (issue 17)
        stripe_signature_verify(payload=request.body, header=request.META.get("HTTP_STRIPE_SIGNATURE"))
        return stripe_event_parse(request.body)
    except WebhookRejected as rejected:
        metrics.EVENTS_REJECTED.labels(rejected.reason).inc()
        log.warning("webhook_rejected", reason=rejected.reason, detail=rejected.detail)
        raise


urlpatterns = [path("stripe/", stripe_webhook, name="stripe-webhook")]
