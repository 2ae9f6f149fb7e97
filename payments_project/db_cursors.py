"""The server-binding cursor of the few statements a process runs on almost every request, and its health check."""

import select
from typing import Any, cast

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper
from psycopg.pq import TransactionStatus


def server_binding_cursor(connection: BaseDatabaseWrapper) -> CursorWrapper:
    """A cursor like connection.cursor() (health check, execute wrappers, the query log) that, on
    PostgreSQL, binds parameters on the server: psycopg prepares a statement a connection runs often
    (prepare_threshold), so PostgreSQL parses and plans it once per connection, not per request, and
    nothing quotes the values client side (Django's own cursors do both every time)."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    # What connection.cursor() does, with another psycopg cursor class (and a cheaper health check).
    _close_if_health_check_failed(connection)
    connection.ensure_connection()
    connection.validate_thread_sharing()
    # django-stubs type neither the cursor class nor make_cursor as Django has them
    raw: Any = ServerBindingCursor(connection.connection)  # type: ignore[call-arg]
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


def _close_if_health_check_failed(connection: BaseDatabaseWrapper) -> None:
    """Django's per-request health check (CONN_HEALTH_CHECKS) of a reused connection, without its `SELECT 1`
    round trip when the connection's socket shows nothing happened since its last statement: a server that
    closed it (restart, idle timeout, terminated backend) has sent a FIN or a FATAL message by then, and a
    socket with anything to read or an error gets Django's own check. The round trip was about a tenth of
    a webhook delivery's CPU in the web process (issue 17)."""
    raw, checks = connection.connection, cast(Any, connection)  # django-stubs lack the health check's attributes
    if raw is None or not checks.health_check_enabled or checks.health_check_done:
        return
    try:
        quiet = raw.info.transaction_status == TransactionStatus.IDLE and not _readable(raw.pgconn.socket)
    except (psycopg.Error, OSError, ValueError):  # closed, or no socket any more
        quiet = False
    if quiet:
        checks.health_check_done = True
    else:
        connection.close_if_health_check_failed()


def _readable(fd: int) -> bool:
    """Whether the socket has something to read, an error or a hang-up, without waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)  # POLLERR, POLLHUP and POLLNVAL are always reported
    return bool(poller.poll(0))
