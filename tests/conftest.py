"""Shared fixtures. Tests about PostgreSQL, Redis or a Celery worker use the real thing.

Locally, a test marked ``postgres`` or ``redis`` is skipped when that server is not there; with
ECHOFLOW_REQUIRE_SERVICES=1 (set by .ci/run) it fails instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from django.db import connection

from echoflow.accounts.models import Organization
from echoflow.accounts.services import organization_get_or_create

REQUIRE_SERVICES = os.environ.get("ECHOFLOW_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def _redis_ok() -> bool:
    if not settings.REDIS_URL:
        return False
    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    redis_ok = _redis_ok()
    for item in items:
        if "postgres" in item.keywords and not is_postgres:
            reason = "needs PostgreSQL: run with DATABASE_URL=postgres://… (scripts/test.sh does)"
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_missing_postgres"))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))
        if "redis" in item.keywords and not redis_ok:
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_missing_redis"))
            else:
                item.add_marker(pytest.mark.skip(reason="needs Redis at REDIS_URL"))


@pytest.fixture
def _fail_missing_postgres() -> None:
    pytest.fail("ECHOFLOW_REQUIRE_SERVICES=1 but DATABASE_URL is not PostgreSQL")


@pytest.fixture
def _fail_missing_redis() -> None:
    pytest.fail(f"ECHOFLOW_REQUIRE_SERVICES=1 but Redis does not answer at {settings.REDIS_URL!r}")


@pytest.fixture
def org(db: None) -> Organization:
    return organization_get_or_create(name="Acme", slug="acme")


@pytest.fixture
def other_org(db: None) -> Organization:
    return organization_get_or_create(name="Globex", slug="globex")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(settings.EVENTS_STREAM)
    yield client
    client.delete(settings.EVENTS_STREAM)


@pytest.fixture
def vendor() -> str:
    return connection.vendor
