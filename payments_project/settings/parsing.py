"""Reading the environment for the settings modules: strict parsers, so a malformed value stops the
process at start-up with a message naming the variable, never falls back to a default silently.

Each secret may instead be given as NAME_FILE, a path to a mounted file (environ.FileAwareEnv).
"""

import ipaddress
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured


class _TrimmedFileAwareMapping(environ.FileAwareMapping):
    """Read NAME_FILE when NAME is unset, without the trailing newline `echo` and editors leave."""

    def __getitem__(self, key: str) -> str:
        return str(super().__getitem__(key)).strip()


class _Env(environ.Env):
    ENVIRON = _TrimmedFileAwareMapping()


env = _Env()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    """A strict boolean: anything but true/false/1/0/yes/no/on/off is a configuration error."""
    raw = env.str(name, default="").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {raw!r}")


def database_config(
    url: str,
    *,
    pool_max_size: int = 0,
    pool_timeout: float = 10.0,
    session_timeouts: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Parse DATABASE_URL; SQLite gets WAL so web, worker and beat can share it in development.

    PostgreSQL with pool_max_size > 0 (the chart's web pods: DATABASE_POOL_MAX_SIZE): one psycopg pool per
    process, shared by its threads, so a process never holds more than pool_max_size connections (a
    thread waits up to pool_timeout seconds for one). Without it each thread keeps its own connection.
    `session_timeouts`: seconds of statement_timeout, lock_timeout and idle_in_transaction_session_timeout,
    set on each PostgreSQL session at connect.
    """
    config: dict[str, Any] = env.db_url_config(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    else:
        config["CONN_HEALTH_CHECKS"] = True
        options = config.setdefault("OPTIONS", {})
        options["connect_timeout"] = 5
        # psycopg prepares a statement a connection has run this many times (Django's default: never). Only
        # cursors that bind on the server prepare (payments_project.db_cursors: the webhook inbox's insert, the
        # checkout's statements, the audit and outbox appends of raw_rows.insert_many), planned once per
        # connection, not per request; Django's own cursors bind client side and never do.
        options["prepare_threshold"] = 5
        if session_timeouts:
            names = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            pairs = zip(names, session_timeouts, strict=True)
            options["options"] = " ".join(f"-c {name}={seconds}s" for name, seconds in pairs)
        if pool_max_size > 0:
            config["CONN_MAX_AGE"] = 0  # a request hands its connection back to the pool (Django requires 0)
            options["pool"] = {"min_size": 1, "max_size": pool_max_size, "timeout": pool_timeout}
        else:
            config["CONN_MAX_AGE"] = 60  # seconds a PostgreSQL connection is reused
    config["ATOMIC_REQUESTS"] = False  # services own their transactions (no Stripe call inside one)
    return config


def cache_config(redis_url: str, *, var_dir: Path | None = None) -> dict[str, Any]:
    """Redis when REDIS_URL is set (shared by every process); else files under `var_dir`, shared by the
    processes of one machine (`make run`'s web and worker: a change the worker makes, such as entitlements a
    webhook ended, must not stay hidden behind the web's cache), or a per-process cache without one."""
    if not redis_url and var_dir is not None:
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(var_dir / "cache"),
            }
        }
    if not redis_url:
        return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return {
        "default": {
            "BACKEND": "payments_project.redis_cache.RedisCache",  # Django's, one client per pool
            "LOCATION": redis_url,
            "KEY_PREFIX": "jia-payments",
            # Short timeouts: a slow Redis must not stall requests (callers fall back to the database).
            # JSON, never pickles: whoever can write to Redis must not be able to run code in ours.
            "OPTIONS": {
                "socket_connect_timeout": 1,
                "socket_timeout": 1,
                "serializer": "payments_project.cache_serializer.JsonSerializer",
            },
        }
    }


def broker_transport_options(broker_url: str, *, var_dir: Path) -> dict[str, Any]:
    if broker_url.startswith("filesystem://"):
        folder = str(var_dir / "broker")
        return {"data_folder_in": folder, "data_folder_out": folder, "control_folder": str(var_dir / "broker-control")}
    # Publisher confirms: a publish returns only once RabbitMQ has taken the message.
    return {"confirm_publish": True}


_RATE = re.compile(r"[1-9][0-9]*/[0-9]*[smhd]")


def rate_limits_from_env(defaults: dict[str, str]) -> dict[str, str]:
    """Each group's rate from RATE_LIMIT_<GROUP>, else the default; a malformed rate is a config error."""
    rates = {}
    for group, default in defaults.items():
        name = "RATE_LIMIT_" + group.upper().replace(".", "_")
        rate = env.str(name, default=default).strip()
        if not _RATE.fullmatch(rate):
            raise ImproperlyConfigured(f"{name} must look like 10/m or 100/5m (s, m, h or d), not {rate!r}")
        rates[group] = rate
    return rates


def service_allowlist_from_env(scopes: tuple[str, ...]) -> dict[str, list[str]]:
    """SERVICE_ALLOWLIST (JSON object) overlaid by SERVICE_ALLOWLIST_<SCOPE> comma lists."""
    raw = env.str("SERVICE_ALLOWLIST", default="").strip()
    try:
        allowlist = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"SERVICE_ALLOWLIST is not JSON: {exc}") from exc
    if not isinstance(allowlist, dict) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in allowlist.values()
    ):
        raise ImproperlyConfigured('SERVICE_ALLOWLIST must be a JSON object {"scope": ["spiffe://...", ...]}')
    for scope in scopes:
        name = "SERVICE_ALLOWLIST_" + scope.upper().replace(".", "_")
        if env.str(name, default=""):
            allowlist[scope] = env.list(name)
    for scope, ids in allowlist.items():
        for spiffe_id in ids:
            if not spiffe_id.startswith("spiffe://"):
                raise ImproperlyConfigured(f"SERVICE_ALLOWLIST[{scope!r}] holds {spiffe_id!r}, not a spiffe:// ID")
    return {scope: list(ids) for scope, ids in allowlist.items()}


def networks_from_env(name: str, default: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma-separated list of CIDRs (a bare address is a /32 or /128); a malformed one is an error."""
    networks = []
    for item in env.str(name, default=default).split(","):
        if not item.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be comma-separated CIDRs, not {item.strip()!r}") from None
    return tuple(networks)


EXPORT_STORAGE_KINDS = ("local", "s3")


def export_storage(
    kind: str, *, bucket: str, endpoint_url: str, region: str, url_ttl_seconds: int, location: str
) -> dict[str, Any]:
    """STORAGES["gdpr_exports"] for GDPR_EXPORT_STORAGE: owner-only local files, or an S3 bucket whose
    URLs are presigned for url_ttl_seconds (the production guard names a missing bucket)."""
    if kind not in EXPORT_STORAGE_KINDS:
        raise ImproperlyConfigured(
            f"GDPR_EXPORT_STORAGE must be one of {', '.join(EXPORT_STORAGE_KINDS)}, not {kind!r}"
        )
    if url_ttl_seconds <= 0:
        raise ImproperlyConfigured(f"GDPR_EXPORT_URL_TTL_SECONDS must be positive, not {url_ttl_seconds}")
    if kind == "local":
        options = {"location": location, "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700}
        return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": options}
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url or None,
            "region_name": region or None,
            # S3-compatible stores (MinIO, Ceph, ...) at their own endpoint want path-style addressing.
            "addressing_style": "path" if endpoint_url else None,
            "signature_version": "s3v4",
            "querystring_auth": True,  # url() is a presigned GET ...
            "querystring_expire": url_ttl_seconds,  # ... that lives this long
            "default_acl": None,  # the bucket's own policy: private
            "file_overwrite": True,  # a rerun replaces its own archive under the same name
        },
    }


def admin_host(origin: str) -> str:
    """The host of ADMIN_ORIGIN (`https://admin.jia.example` -> `admin.jia.example`): passkeys' relying party."""
    host = urlsplit(origin).hostname
    if not host or urlsplit(origin).scheme not in ("http", "https"):
        raise ImproperlyConfigured(f"ADMIN_ORIGIN must look like https://admin.example.com, not {origin!r}")
    return host


def return_url_origins(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated origins (`https://app.jia.example`) that return URLs may point at, normalised.

    https only; http only for localhost (development). Production's guard refuses http altogether.
    """
    from payments_project.return_urls import LOCALHOSTS, url_origin

    origins = []
    for item in raw.split(","):
        item = item.strip().rstrip("/")
        if not item:
            continue
        origin = url_origin(item)
        parts = urlsplit(item)
        if origin is None or parts.path or parts.query or parts.fragment:
            raise ImproperlyConfigured(f"{name} must be comma-separated origins like https://app.example, not {item!r}")
        if parts.scheme.lower() == "http" and parts.hostname not in LOCALHOSTS:
            raise ImproperlyConfigured(f"{name}: http is allowed for localhost only, not {item!r}")
        origins.append(origin)
    return tuple(origins)
