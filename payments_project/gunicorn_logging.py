"""gunicorn's error and access logs as the same structlog JSON lines as the application's
(`gunicorn --logger-class payments_project.gunicorn_logging.JsonLogger`, as scripts/docker-entrypoint.sh runs it).

gunicorn writes plain text through handlers of its own; here both of its loggers hand their records to the
root JSON handler instead, from the master's first line on (before any worker has loaded Django).
"""

import logging
import logging.config
import os
from datetime import timedelta
from typing import Any

import structlog
from gunicorn.glogging import Logger

from payments_project.logging import logging_config

access_log = structlog.get_logger("gunicorn.access")


class JsonLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        logging.config.dictConfig(logging_config(os.environ.get("LOG_LEVEL", "INFO").upper()))
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True
        logging.captureWarnings(True)  # Python's warnings too, rather than plain text on stderr

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """One line per request, with the request id and trace id the request bound (no query string, no
        client address or user agent: they may be personal data)."""
        if not self.access_log_enabled:
            return
        try:
            request_id = next((value for name, value in resp.headers if name.lower() == "x-request-id"), None)
            access_log.info(
                "http_request",
                method=environ.get("REQUEST_METHOD"),
                path=environ.get("PATH_INFO"),
                status=resp.status_code,
                duration_ms=round(request_time.total_seconds() * 1000, 1),
                response_bytes=getattr(resp, "sent", None),
                # what the request bound is still in this thread's context; its own header says which request
                **({"request_id": request_id} if request_id else {}),
            )
        except Exception:
            self.error_log.exception("access log line failed")
        finally:
            # The request is over: what it bound must not leak into the next one served by this thread.
            structlog.contextvars.clear_contextvars()
