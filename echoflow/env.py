"""Strict parsing of settings from the environment.

Every reader names the variable in its error so that a wrong value stops start-up with a message an operator
can act on, instead of a traceback from deep inside Django or Celery.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit, urlunsplit


class ConfigError(Exception):
    """A setting read from the environment is missing or malformed."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}: expected one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}; got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}; got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(name: str, url: str, *, base_dir: Path) -> dict[str, Any]:
    """Turn ``DATABASE_URL`` into a Django DATABASES entry (PostgreSQL or SQLite only)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative/path.sqlite3 or sqlite:////absolute/path.sqlite3
        raw_path = unquote(parts.path)
        path = Path(raw_path[1:]) if raw_path.startswith("//") else base_dir / raw_path.lstrip("/")
        if not raw_path.strip("/"):
            raise ConfigError(f"{name}: a sqlite URL needs a file path, like sqlite:///var/echoflow.sqlite3")
        path.parent.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(path),
            # Web, worker and beat share the file; wait for the write lock instead of failing at once.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            },
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ConfigError(f"{name}: a PostgreSQL URL needs a database name, like postgres://user@host/echoflow")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{name}: the port is not a number") from None
        options: dict[str, Any] = {}
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            options[key] = values[-1]
        options["prepare_threshold"] = _prepare_threshold(name, options.get("prepare_threshold", "5"))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ConfigError(f"{name}: unsupported scheme {parts.scheme!r}; use postgres://… or sqlite:///…")


def _prepare_threshold(name: str, value: str) -> int | None:
    """psycopg's ``prepare_threshold``: after how many runs on a connection a statement is prepared (only the
    executor's hot statements can be: Django's own cursors bind on the client). 5 by default; ``none`` turns
    prepared statements off, as a PgBouncer older than 1.21 in transaction mode needs."""
    if value.strip().lower() in {"", "none", "off"}:
        return None
    try:
        threshold = int(value)
    except ValueError:
        threshold = -1
    if threshold < 0:
        raise ConfigError(f"{name}: prepare_threshold must be a whole number >= 0 or none; got {value!r}")
    return threshold


def check_redis_url(name: str, url: str) -> str:
    """``url`` checked, and as every client should be given it: a ``rediss://`` URL's ``ssl_cert_reqs`` in the
    spelling redis-py takes (Celery's and kombu's documentation write ``CERT_REQUIRED``, which redis-py refuses)."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"{name}: expected a redis://host:port/db URL; got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ConfigError(f"{name}: the port is not a number") from None
    redis_tls_options(name, url)
    if parts.scheme != "rediss":
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "ssl_cert_reqs" for key, _ in pairs):
        return url
    query = "&".join(
        f"{key}={_cert_reqs(name, value) if key == 'ssl_cert_reqs' else quote(value, safe='/:')}"
        for key, value in pairs
    )
    return urlunsplit(parts._replace(query=query))


SSL_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
# The ssl module's names, as Celery's and kombu's documentation spell the values (any case).
_CERT_REQS_ALIASES = {"cert_required": "required", "cert_optional": "optional", "cert_none": "none"}


def _cert_reqs(name: str, value: str) -> str:
    """``ssl_cert_reqs`` in redis-py's spelling; a value that is neither spelling is refused by name."""
    short = value.strip().lower()
    short = _CERT_REQS_ALIASES.get(short, short)
    if short not in SSL_CERT_REQS:
        raise ConfigError(
            f"{name}: ssl_cert_reqs must be required, optional or none (or CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE); "
            f"got {value!r}"
        )
    return short


_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def redis_tls_options(name: str, url: str) -> dict[str, Any] | None:
    """The TLS options of a ``rediss://`` URL, for the Celery broker; None for any other scheme.

    redis-py (the event stream, the health check) verifies the server's certificate of a ``rediss://`` URL unless the
    URL says ``ssl_cert_reqs=none``; kombu (the broker) verifies nothing unless told, and only logs a warning. The
    broker is given the same options as redis-py takes from the URL, so one URL means the same thing to both:
    ``ssl_cert_reqs`` (``required``, the default; ``optional``; ``none``; or the ssl module's names, ``CERT_REQUIRED``
    and so on, which ``check_redis_url`` rewrites for redis-py) and the files ``ssl_ca_certs``,
    ``ssl_certfile`` and ``ssl_keyfile``. A value neither accepts, or a file that is not there, is refused by name:
    kombu would otherwise fall back to no verification.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    reqs = _cert_reqs(name, query.get("ssl_cert_reqs", "required"))
    options: dict[str, Any] = {"ssl_cert_reqs": SSL_CERT_REQS[reqs]}
    for key in _SSL_FILES:
        if key in query:
            path = unquote(query[key])
            if not Path(path).is_file():
                raise ConfigError(f"{name}: {key} {path!r} is not a file")
            options[key] = path
    return options
