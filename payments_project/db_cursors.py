"""Cursors for the few statements a process runs on almost every request: written once, bound on the server."""

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper


def server_binding_cursor(connection: BaseDatabaseWrapper) -> CursorWrapper:
    """A cursor like connection.cursor() (health check, execute wrappers, the query log) that, on
    PostgreSQL, binds parameters on the server: psycopg prepares a statement a connection runs often
    (prepare_threshold), so PostgreSQL parses and plans it once per connection, not per request, and
    nothing quotes the values client side (Django's own cursors do both every time)."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    # What connection.cursor() does, with another psycopg cursor class.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    # django-stubs type neither the cursor class nor make_cursor as Django has them
    raw: Any = ServerBindingCursor(connection.connection)  # type: ignore[call-arg]
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
