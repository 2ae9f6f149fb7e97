from prometheus_client import Counter, Gauge, Histogram

EVENTS_RECEIVED = Counter(
    "payments_webhook_events_received_total", "Signed events accepted, by type and whether new", ["type", "outcome"]
)
EVENTS_REJECTED = Counter("payments_webhook_events_rejected_total", "Deliveries refused, by reason", ["reason"])
EVENTS_PROCESSED = Counter(
    "payments_webhook_events_processed_total", "Processing attempts, by type and resulting status", ["type", "status"]
)
PROCESSING_LATENCY = Histogram(
    "payments_webhook_processing_latency_seconds",
    "From receipt to processed",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
# multiprocess_mode: under PROMETHEUS_MULTIPROC_DIR, one series for all processes, not one each.
BACKLOG = Gauge(
    "payments_webhook_backlog", "Events received, processing or failed (set by the sweeper)", multiprocess_mode="max"
)
DEAD = Gauge("payments_webhook_dead", "Events that need a person (set by the sweeper)", multiprocess_mode="max")
