"""EchoFlow settings, read from the environment (see docs/operations.md for every variable).

The embedded default needs nothing but Python: a SQLite file and a filesystem broker under ``var/``.
Production sets ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import django_stubs_ext

from echoflow.env import (
    ConfigError,
    check_redis_url,
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    redis_tls_options,
)

# Lets generic Django classes be subscripted at run time (ModelForm[Schedule]) for the type checker.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ECHOFLOW_VAR_DIR") or BASE_DIR / "var").resolve()

DEBUG = env_bool("DEBUG", default=False)
# The embedded default (no DATABASE_URL): SQLite and a filesystem broker under var/, for one machine.
EMBEDDED = not env_str("DATABASE_URL")
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if EMBEDDED:
        # A laptop install keeps a generated key in var/ so sessions survive restarts; production must set one.
        key_file = VAR_DIR / "secret_key"
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            import secrets

            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        SECRET_KEY = key_file.read_text().strip()
    elif DEBUG:
        SECRET_KEY = "echoflow-insecure-development-key-do-not-use-in-production"
    else:
        raise ConfigError("SECRET_KEY: required when DEBUG is off and DATABASE_URL is set")
if env_bool("TRUST_X_FORWARDED_PROTO", default=False):
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if not DEBUG else ["*"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "echoflow",
    "echoflow.accounts",
    "echoflow.events",
    "echoflow.audit",
    "echoflow.observability",
    "schedules",
    "runs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "echoflow.audit.context.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "echoflow.urls"
WSGI_APPLICATION = "echoflow.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'echoflow.sqlite3'}"
DATABASES = {"default": database_from_url("DATABASE_URL", DATABASE_URL, base_dir=BASE_DIR)}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "schedules_web:login"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- API ---------------------------------------------------------------------------------------------------------
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "EchoFlow API",
    "DESCRIPTION": "Schedules, runs, audit log and organizations of EchoFlow.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
API_RATE_LIMIT = env_str("API_RATE_LIMIT", "600/minute")

# --- Broker, event bus -----------------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    REDIS_URL = check_redis_url("REDIS_URL", REDIS_URL)
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded default: a broker made of files, shared by every process on this machine, no server needed.
    for folder in ("queue", "processed", "control"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # A worker looks for its next message this often (kombu's default is once a second). With prefetch 1 it
        # takes one message per look, so at 1 s the embedded worker ran at most one task a second: the system
        # tasks alone (dispatch every second, relay and event processing every two) outran it, and dispatch ticks
        # expired in the queue. An empty look is a directory listing.
        "polling_interval": 0.05,
    }
else:
    # Backoff waits live in the database, so no message sits in Redis for long; the visibility timeout only has
    # to outlast the longest attempt before a lost worker's message is redelivered.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("ECHOFLOW_VISIBILITY_TIMEOUT", 3600, minimum=60),
        "queue_order_strategy": "priority",
    }
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # kombu's Redis transport with one client per channel instead of one per command (echoflow/broker.py).
        CELERY_BROKER_TRANSPORT = "echoflow.broker:RedisTransport"
    # rediss://: the broker verifies Redis's certificate as the event stream's client does (kombu alone would not).
    _broker_tls = redis_tls_options("CELERY_BROKER_URL", CELERY_BROKER_URL)
    if _broker_tls is not None:
        CELERY_BROKER_USE_SSL = _broker_tls
        CELERY_BROKER_URL = check_redis_url("CELERY_BROKER_URL", CELERY_BROKER_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# No task-sent event per message: the dispatcher sends thousands of runs a second and the event doubled the cost of
# each send (Flower still sees every task from the worker's received/started/succeeded events).
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_WORKER_SEND_TASK_EVENTS = True
# Task events of a 50 ms window go out as one message, not one Redis PUBLISH each (echoflow/worker_consumer.py).
CELERY_WORKER_CONSUMER = "echoflow.worker_consumer:Consumer"
CELERY_TIMEZONE = "UTC"
# Celery's Django fixup closes every database connection before and after each task unless this is set: each run
# and each dispatch tick paid a new PostgreSQL connection (docs/benchmarks.md, scenario lag). With it, connections
# are kept (the fixup closes them every 2 x this many tasks), and echoflow.celery closes the broken ones and those
# older than CONN_MAX_AGE around each task, as Django does around each request.
CELERY_DB_REUSE_MAX = 1000
CELERY_BEAT_SCHEDULER = "echoflow.beat:EchoFlowScheduler"
CELERY_TASK_DEFAULT_QUEUE = "echoflow"
# Runs go to one of three queues by priority (runs.dispatcher.queue_for_priority). Workers list the queues in
# order (system, high, default, low); the Redis transport's "priority" queue order serves the first non-empty
# queue first, so a flood of low-priority runs never delays a high-priority one or a dispatch tick.
RUN_QUEUES = {"high": "echoflow.high", "default": "echoflow", "low": "echoflow.low"}
WORKER_QUEUES = "echoflow.system,echoflow.high,echoflow,echoflow.low"
CELERY_TASK_ROUTES = {
    "echoflow.system.*": {"queue": "echoflow.system"},
    "echoflow.execute_run": {"queue": "echoflow"},
    "echoflow.execute_runs": {"queue": "echoflow"},
}
DJANGO_CELERY_BEAT_TZ_AWARE = True

# Rate limits and other shared counters: Redis when configured, else the database (shared by every process).
CACHES: dict[str, Any] = (
    {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "ef"}}
    if REDIS_URL
    else {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
)

EVENTS_REDIS_URL = env_str("EVENTS_REDIS_URL") or REDIS_URL
if EVENTS_REDIS_URL:
    EVENTS_REDIS_URL = check_redis_url("EVENTS_REDIS_URL", EVENTS_REDIS_URL)
EVENTS_STREAM = env_str("EVENTS_STREAM", "echoflow:events")
EVENTS_STREAM_MAXLEN = env_int("EVENTS_STREAM_MAXLEN", 1_000_000, minimum=1000)

# --- Scheduling rules ---------------------------------------------------------------------------------------------
ECHOFLOW: dict[str, Any] = {
    "MIN_INTERVAL_SECONDS": env_int("ECHOFLOW_MIN_INTERVAL_SECONDS", 10, minimum=1),
    "MAX_INTERVAL_SECONDS": env_int("ECHOFLOW_MAX_INTERVAL_SECONDS", 366 * 24 * 3600, minimum=60),
    "DISPATCH_INTERVAL_SECONDS": env_float("ECHOFLOW_DISPATCH_INTERVAL", 1.0, minimum=0.1),
    "DISPATCH_BATCH_SIZE": env_int("ECHOFLOW_DISPATCH_BATCH_SIZE", 1000, minimum=1, maximum=50_000),
    # The first batch of a tick is at most this many schedules: its runs are written, committed and sent while
    # the rest of a large slot is still being planned, so workers start on a burst at once (runs.dispatcher).
    "DISPATCH_FIRST_BATCH_SIZE": env_int("ECHOFLOW_DISPATCH_FIRST_BATCH_SIZE", 256, minimum=1, maximum=50_000),
    "RESEND_AFTER_SECONDS": env_int("ECHOFLOW_RESEND_AFTER", 300, minimum=5),
    # A burst of runs to one queue goes out as messages of up to RUN_BATCH_MAX runs each, but in at least
    # RUN_BATCH_SPREAD messages, so that that many worker processes share it (runs.sending). 1 turns batching off.
    "RUN_BATCH_MAX": env_int("ECHOFLOW_RUN_BATCH_MAX", 16, minimum=1, maximum=1000),
    "RUN_BATCH_SPREAD": env_int("ECHOFLOW_RUN_BATCH_SPREAD", 64, minimum=1),
    # A batch still running after this long sends the runs it has not started back to the broker, to the head
    # of their queue, for any free worker process (runs.executor.run_execute_batch).
    "RUN_BATCH_SPILL_SECONDS": env_float("ECHOFLOW_RUN_BATCH_SPILL", 0.25, minimum=0.0),
    "HEARTBEAT_STALE_SECONDS": env_int("ECHOFLOW_HEARTBEAT_STALE", 30, minimum=2),
    # SIGTERM to a worker: running attempts get this long to finish, then are recorded interrupted and retried.
    "SHUTDOWN_GRACE_SECONDS": env_float("ECHOFLOW_SHUTDOWN_GRACE", 20.0, minimum=0.0),
    "DEFAULT_CATCHUP_WINDOW_SECONDS": env_int("ECHOFLOW_DEFAULT_CATCHUP_WINDOW", 3600, minimum=0),
    "MISFIRE_ALL_CAP": env_int("ECHOFLOW_MISFIRE_ALL_CAP", 100, minimum=1),
    "BACKFILL_CAP": env_int("ECHOFLOW_BACKFILL_CAP", 10_000, minimum=1),
    "OUTPUT_MAX_CHARS": env_int("ECHOFLOW_OUTPUT_MAX_CHARS", 16_384, minimum=256),
    "HTTP_ALLOW_PRIVATE": env_bool("ECHOFLOW_HTTP_ALLOW_PRIVATE", default=False),
    "HTTP_ALLOWED_HOSTS": env_list("ECHOFLOW_HTTP_ALLOWED_HOSTS", []),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": sys.stderr}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- Observability ------------------------------------------------------------------------------------------------
# Alerts (docs/observability.md): a schedule's N failed runs in a row (N per schedule in the admin, this default),
# and the dispatcher's heartbeat older than this many seconds.
ALERT_CONSECUTIVE_FAILURES = env_int("ALERT_CONSECUTIVE_FAILURES", 3, minimum=1)
ALERT_DISPATCHER_STALE_SECONDS = env_int("ALERT_DISPATCHER_STALE_SECONDS", 30, minimum=5)
ALERT_EMAIL_TO = env_list("ALERT_EMAIL_TO", [])
# Email goes through Django's backend; SMTP unless EMAIL_BACKEND names another.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", default=False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ConfigError("EMAIL_USE_TLS, EMAIL_USE_SSL: set at most one of them")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "echoflow@localhost")
# Webhook deliveries: each request's timeout, and attempts before a delivery is given up.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.5)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1, maximum=50)
# /metrics answers only requests with "Authorization: Bearer <token>" when this is set.
METRICS_TOKEN = env_str("METRICS_TOKEN")
