"""The registry of personal data: each app declares, in its AppConfig.ready(), what it holds about a
user and how to export and erase it. gdpr drives exports and erasures through this registry only; it
never imports the apps that register.

    register(PersonalDataProvider(
        name="billing", order=10, models=(Customer, Order, ...),
        export=billing_export, erase=billing_erase, emails=billing_emails,
    ))

- `export(*, subject)` returns {table name: [row, ...]} with JSON-able values (DjangoJSONEncoder's).
- `erase(*, subject)` removes or pseudonymises the app's part. It runs OUTSIDE any transaction (it may
  call Stripe; it opens its own transactions), must be idempotent (a rerun after a crash or a failure
  does it again), and raises on failure: a TransientError (or DependencyUnavailable) is retried with
  backoff, anything else fails the request with its message.
- `emails(*, user_id)` names the addresses the app knows for the user; an erasure collects them before
  its first step, so later steps still find data filed under an address an earlier step blanked.
- `order`: erasure order, lowest first. billing (10) cancels subscriptions and deletes the Stripe customer
  first, then entitlements (20), webhooks (30); gdpr's audit trail and outbox go last (90), so they also
  catch what the earlier steps recorded.

The pseudonym that replaces an erased user's id is stable: `pseudo_` + HMAC-SHA256 of the user id under
GDPR_PSEUDONYM_KEY (derived from SECRET_KEY when unset), 24 hex digits. Every provider uses the same one,
so the financial records kept after an erasure still group by (erased) person, and the user's own
requests stay findable by it. Where a column needs a UUID, `DataSubject.pseudonymous_uuid` is uuid5 of it.
"""

import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Combinable, Value
from django.db.models.sql.compiler import SQLCompiler
from django.utils.encoding import force_bytes

from tasks.errors import TransientError

Tables = dict[str, list[dict[str, Any]]]
# uuid5 namespace of pseudonymous UUIDs (a fixed, random constant: changing it changes every pseudonym).
PSEUDONYM_NAMESPACE = uuid.UUID("5f0c8a3e-6b1d-4f7e-9a52-3d0b7c1e4a96")
PSEUDONYM_PREFIX = "pseudo_"
ERASED = "[erased]"


MAX_EMAIL_LENGTH = 254


def normalised_email(email: str | None) -> str:
    """An address as personal data is matched by (API.md, "Personal data"): stripped, lower case, and
    only if it is an address at all; "" otherwise (a claim of `@`, `%`, `_` or nothing matches nobody)."""
    email = (email or "").strip().lower()
    if not email or len(email) > MAX_EMAIL_LENGTH:
        return ""
    try:
        validate_email(email)
    except ValidationError:
        return ""
    return email


@dataclass(frozen=True)
class DataSubject:
    """The person whose data is exported or erased."""

    user_id: uuid.UUID
    pseudonym: str
    emails: frozenset[str] = frozenset()

    @property
    def pseudonymous_uuid(self) -> uuid.UUID:
        return uuid.uuid5(PSEUDONYM_NAMESPACE, self.pseudonym)

    def __post_init__(self) -> None:
        # Matching is exact equality of normalised addresses: anything that is not one is dropped here.
        object.__setattr__(self, "emails", frozenset(filter(None, map(normalised_email, self.emails))))

    @property
    def identifiers(self) -> frozenset[str]:
        """Every text by which the person can be found in free text: the user id and the addresses."""
        return frozenset({str(self.user_id), *self.emails})


class ExportFunction(Protocol):
    def __call__(self, *, subject: DataSubject) -> Tables: ...


class EraseFunction(Protocol):
    def __call__(self, *, subject: DataSubject) -> None: ...


class EmailsFunction(Protocol):
    def __call__(self, *, user_id: uuid.UUID) -> set[str]: ...


def _no_emails(*, user_id: uuid.UUID) -> set[str]:
    return set()


@dataclass(frozen=True)
class PersonalDataProvider:
    name: str  # unique and stable: it is the key of the erasure's step rows
    order: int
    models: tuple[type[models.Model], ...]  # what it covers (a test checks every personal model is covered)
    export: ExportFunction
    erase: EraseFunction
    emails: EmailsFunction = field(default=_no_emails)


class ProviderNotReady(TransientError):
    """The data cannot be erased yet (e.g. events naming the user still wait to be published): retry later."""


_providers: dict[str, PersonalDataProvider] = {}


def register(provider: PersonalDataProvider) -> None:
    """Add a provider (from AppConfig.ready()); registering the same one again is harmless."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", provider.name):
        raise ImproperlyConfigured(f"personal-data provider name {provider.name!r} is not a short lower-case name")
    known = _providers.get(provider.name)
    if known is not None and known != provider:
        raise ImproperlyConfigured(f"two personal-data providers are named {provider.name!r}")
    _providers[provider.name] = provider


def providers() -> list[PersonalDataProvider]:
    """Every registered provider, in erasure order."""
    return sorted(_providers.values(), key=lambda p: (p.order, p.name))


def provider_named(name: str) -> PersonalDataProvider | None:
    return _providers.get(name)


def pseudonym_for(user_id: uuid.UUID | str) -> str:
    """The user's stable pseudonym (see the module docstring)."""
    key = settings.GDPR_PSEUDONYM_KEY or "jia.gdpr.pseudonym:" + settings.SECRET_KEY
    digest = hmac.new(force_bytes(key), force_bytes(str(uuid.UUID(str(user_id)))), sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:24]


# --- helpers for providers -------------------------------------------------------------------------------


def rows(queryset: models.QuerySet[Any], *, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """A queryset's rows as plain dicts of every concrete column (FKs as `<name>_id`), minus `exclude`."""
    skipped = set(exclude)
    names = [f.attname for f in queryset.model._meta.concrete_fields if f.attname not in skipped]
    return list(queryset.order_by("pk").values(*names))


class JSONStringsAny(models.Func):
    """True when some string value anywhere in a JSON column (jsonb, or text holding JSON) equals one of
    `values`, case-insensitively. Exact equality, never a substring: `bob@x.com` does not find
    `jimbob@x.com`, and `%`, `_` or `@` find only a string that is exactly that."""

    output_field = models.BooleanField()

    def __init__(self, expression: Combinable | str, values: Iterable[str]) -> None:
        super().__init__(expression, Value(sorted({value.lower() for value in values if value})))

    def as_sql(  # type: ignore[override]
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, list[Any]]:
        column, column_params = compiler.compile(self.source_expressions[0])
        values, values_params = compiler.compile(self.source_expressions[1])
        sql = (
            f"(jsonb_path_query_array(lower(({column})::text)::jsonb, "
            f"'strict $.** ? (@.type() == \"string\")') ?| ({values})::text[])"
        )
        return sql, [*column_params, *values_params]


def redact_text(text: str, replacements: Mapping[str, str]) -> str:
    """Replace every occurrence of each key (case-insensitively) by its value, as a whole token: the
    address `bob@x.com` inside `jimbob@x.com` or `bob@x.com.au` is someone else's and stays."""
    for needle, replacement in replacements.items():
        if needle:
            pattern = rf"(?<![\w.%+-]){re.escape(needle)}(?![\w-]|\.\w)"
            text = re.sub(pattern, replacement, text, flags=re.IGNORECASE)
    return text


def redact_json(value: Any, replacements: Mapping[str, str]) -> Any:
    """redact_text through every string (keys included) of a JSON value."""
    if isinstance(value, str):
        return redact_text(value, replacements)
    if isinstance(value, list):
        return [redact_json(item, replacements) for item in value]
    if isinstance(value, dict):
        return {redact_text(k, replacements): redact_json(v, replacements) for k, v in value.items()}
    return value


def replacements_for(subject: DataSubject) -> dict[str, str]:
    """What erasure writes instead of the person's identifiers in free text: the pseudonym for the id,
    a marker for an address."""
    return {str(subject.user_id): subject.pseudonym, **dict.fromkeys(subject.emails, ERASED)}
