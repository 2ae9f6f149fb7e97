"""Rows read and written with hand-written SQL where the ORM's compiling cost more CPU than the database's
running the statement (a webhook drain's claim, lock-ahead and updates; audit and outbox appends): what the
ORM would have sent and what it would have made of the values that come back."""

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from django.apps import apps
from django.db import models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from payments_project.db_cursors import server_binding_cursor


def row_converter(connection: BaseDatabaseWrapper, fields: Sequence[Any]) -> Callable[[Sequence[Any]], list[Any]]:
    """For a statement whose columns are these fields' (in order), a function turning one of its raw rows
    into the values a queryset would give: the backend's converters, then the field's (SQLite hands back
    naive datetimes as text, for one). Built once per statement, run per row."""
    # The backend's converters take an expression (SQLite's read its output_field): the field's column.
    columns = [field.cached_col for field in fields]
    converters = [
        (n, column, convert_all)
        for n, column in enumerate(columns)
        if (convert_all := connection.ops.get_db_converters(column) + column.get_db_converters(connection))
    ]

    def convert(row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for n, column, convert_all in converters:
            value = values[n]
            for converter in convert_all:
                value = converter(value, column, connection)
            values[n] = value
        return values

    return convert


def rows_update_sql(
    connection: BaseDatabaseWrapper, model: type[models.Model], names: tuple[str, ...], rows: int
) -> str:
    """One UPDATE setting the fields `names` of `rows` rows of `model` to values of their own: its
    parameters are, row after row, the primary key then the fields' values as the fields write them
    (`get_db_prep_save`). Where the save of each row was a statement of its own."""
    return _rows_update_sql(connection.vendor, model._meta.label, names, rows)


@functools.lru_cache(maxsize=512)
def _rows_update_sql(vendor: str, label: str, names: tuple[str, ...], rows: int) -> str:
    connection = transaction.get_connection()  # `vendor` keys the cache: quoting and types are the vendor's
    meta = apps.get_model(label)._meta
    quote, table = connection.ops.quote_name, connection.ops.quote_name(meta.db_table)
    fields = [meta.pk, *(meta.get_field(name) for name in names)]
    # PostgreSQL types a VALUES list by its contents: each value cast to its column's type (a NULL, a text).
    casts = [f"::{field.cast_db_type(connection)}" if vendor == "postgresql" else "" for field in fields]
    row = "(" + ", ".join(f"%s{cast}" for cast in casts) + ")"
    # A VALUES list's columns are column1, column2, … on both vendors: the key, then each field's value.
    assignments = ", ".join(f"{quote(field.column)} = v.column{n}" for n, field in enumerate(fields[1:], start=2))
    # Identifiers from the model; every value is a parameter. SQLite (make run) takes UPDATE … FROM since 3.33;
    # the statement starts with UPDATE, not WITH: Python's sqlite3 counts the rows only of what it sees is DML.
    return (
        f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row] * rows)}) AS v "  # noqa: S608
        f"WHERE {table}.{quote(meta.pk.column)} = v.column1"
    )


# A row to insert as its column values: its model, and its fields' values by attribute name (`event_id`) as an
# instance would hold them; a field left out takes its default, as in Model(**values). For rows nobody needs as
# instances (the audit rows and outbox message of a checkout): building an instance cost more than its INSERT.
NewRow = tuple[type[models.Model], Mapping[str, Any]]


def update_then_insert(update: str, params: Sequence[Any], rows: Sequence[NewRow]) -> bool:
    """Run `update` (an UPDATE of at most one row, its parameters `params`) and, only when it changed a row,
    INSERT `rows` (primary keys set; events and messages that describe the change), all or nothing; whether it
    changed a row.

    On PostgreSQL it is one statement, atomic by itself (the inserts in a data-modifying WITH, each selecting
    its row only when the UPDATE returned one): outside a transaction one round trip, where a transaction of
    its own took six (BEGIN, each statement, COMMIT). Elsewhere (SQLite, `make run`) the same in a transaction.
    """
    connection = transaction.get_connection()
    labels = tuple(model._meta.label for model, _ in rows)
    inserted = [row_params(connection, model, values) for model, values in rows]
    if connection.vendor == "postgresql":
        with server_binding_cursor(connection) as cursor:
            cursor.execute(_update_then_insert_statement(update, labels), [*params, *chain.from_iterable(inserted)])
            (changed,) = cursor.fetchone()
    else:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(update, params)
            changed = cursor.rowcount
            if changed:
                for label, values in zip(labels, inserted, strict=True):
                    cursor.execute(_insert_statement(connection.vendor, label, 1), values)
    return bool(changed)


def insert_each(rows: Sequence[NewRow]) -> None:
    """INSERT each of `rows` (primary keys set) in a statement of its own."""
    connection = transaction.get_connection()
    with server_binding_cursor(connection) as cursor:
        for model, values in rows:
            cursor.execute(
                _insert_statement(connection.vendor, model._meta.label, 1), row_params(connection, model, values)
            )


@functools.lru_cache(maxsize=32)
def _update_then_insert_statement(update: str, labels: tuple[str, ...]) -> str:
    quote = transaction.get_connection().ops.quote_name
    # `update` is the caller's statement, the rest identifiers from the models; every value is a parameter.
    parts = [f"changed AS ({update} RETURNING 1)"]
    for n, label in enumerate(labels):
        meta = apps.get_model(label)._meta
        columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
        # PostgreSQL types each parameter by its column, as it does those of INSERT ... VALUES.
        values = ", ".join(["%s"] * len(meta.concrete_fields))
        parts.append(
            f"inserted{n} AS (INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608 - identifiers from the model
            f"SELECT {values} WHERE EXISTS (SELECT FROM changed))"
        )
    return f"WITH {', '.join(parts)} SELECT count(*) FROM changed"  # noqa: S608


def insert_many(model: type[models.Model], rows: Sequence[models.Model]) -> None:
    """INSERT `rows` (unsaved instances of `model`, primary keys set) in one statement, every concrete field as
    the field writes it: what bulk_create sends, without compiling it anew each time (no signals either way).
    The text is remembered per (model, row count) and bound on the server, so PostgreSQL plans it once per
    connection."""
    if not rows:
        return
    connection = transaction.get_connection()
    with server_binding_cursor(connection) as cursor:
        cursor.execute(
            _insert_statement(connection.vendor, model._meta.label, len(rows)), insert_params(connection, model, rows)
        )
    for row in rows:
        row._state.adding, row._state.db = False, connection.alias


def insert_params(
    connection: BaseDatabaseWrapper, model: type[models.Model], rows: Sequence[models.Model]
) -> list[Any]:
    """The parameters of rows' INSERT: every concrete field of each row in turn, as the field writes it
    (`get_db_prep_save`), but for a value the field would hand over as it is."""
    columns = _insert_columns(connection.vendor, model._meta.label)
    return [
        value
        if as_is is not None and as_is(value := getattr(row, attname))
        else field.get_db_prep_save(field.pre_save(row, add=True), connection)
        for row in rows
        for field, attname, as_is in columns
    ]


def row_params(connection: BaseDatabaseWrapper, model: type[models.Model], values: Mapping[str, Any]) -> list[Any]:
    """The parameters of a NewRow's INSERT: every concrete field's value, or its default, as the field writes it
    (as insert_params does)."""
    params = []
    for field, attname, as_is in _row_columns(connection.vendor, model._meta.label):
        value = values[attname] if attname in values else field.get_default()
        params.append(value if as_is is not None and as_is(value) else field.get_db_prep_save(value, connection))
    return params


def _plain(kind: type) -> Callable[[Any], bool]:
    return lambda value: value is None or type(value) is kind


# Values that a field of this very class hands to PostgreSQL as they are (psycopg adapts them), by a test of
# the value: NULL, a str, a UUID, an aware datetime (a naive one is made aware, with a warning). The ORM's
# three or four calls per column were most of an INSERT's parameters' cost (a datetime's 2 µs). Integers are
# not among them: Django wraps them in psycopg's sized types, which choose the type PostgreSQL is told.
_AS_IS_ON_POSTGRESQL: dict[type["models.Field[Any, Any]"], Callable[[Any], bool]] = {
    models.CharField: _plain(str),
    models.TextField: _plain(str),
    models.URLField: _plain(str),
    models.UUIDField: _plain(uuid.UUID),
    models.DateTimeField: lambda value: value is None or (type(value) is datetime and value.utcoffset() is not None),
}


@functools.lru_cache(maxsize=128)
def _insert_columns(
    vendor: str, label: str
) -> list[tuple["models.Field[Any, Any]", str, Callable[[Any], bool] | None]]:
    """Each concrete field of the model, its attribute, and the test of a value it writes as it is (None:
    every value goes through the field). Elsewhere than on PostgreSQL every value does."""
    columns = []
    for field in apps.get_model(label)._meta.concrete_fields:
        # A foreign key writes its value as the field it points to does; a value set on save is the field's.
        writes = field.target_field if type(field) in (models.ForeignKey, models.OneToOneField) else field
        set_on_save = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        as_is = None if vendor != "postgresql" or set_on_save else _AS_IS_ON_POSTGRESQL.get(type(writes))
        columns.append((field, field.attname, as_is))
    return columns


@functools.lru_cache(maxsize=128)
def _row_columns(vendor: str, label: str) -> list[tuple["models.Field[Any, Any]", str, Callable[[Any], bool] | None]]:
    """_insert_columns for a NewRow, whose values no field's pre_save sees: refused for a model with one."""
    columns = _insert_columns(vendor, label)
    if any(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False) for field, _, _ in columns):
        raise TypeError(f"{label} has a field set on save (auto_now): insert its rows as instances")
    return columns


@functools.lru_cache(maxsize=128)
def _insert_statement(vendor: str, label: str, count: int) -> str:  # `vendor` keys it: quoting is the vendor's
    meta = apps.get_model(label)._meta
    quote = transaction.get_connection().ops.quote_name
    columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(meta.concrete_fields)) + ")"] * count)
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {placeholders}"  # noqa: S608 - identifiers from the model
