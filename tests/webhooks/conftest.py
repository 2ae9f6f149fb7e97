import tests.webhooks.handlers_for_tests  # noqa: F401  (registers the test-only event types)
