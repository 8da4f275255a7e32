"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis, in-process over WSGI).

For every operation, up to 30 generated requests are sent with a valid admin token; every answer must be a non-5xx
whose status code, content type, headers and body the schema declares. The database is the real PostgreSQL, so a
value the validation let through and PostgreSQL refuses shows up here (a time zone offset beyond ±15:59 did).

By default the requests follow the schema's types (schemathesis' "positive" mode, which still sends NUL characters,
odd Unicode, extreme numbers and instants). Schema-violating requests cost about four times as much to generate;
run them, and more of everything, with ECHOFLOW_API_FUZZ_MODE=all ECHOFLOW_API_FUZZ_EXAMPLES=150 (about 15 minutes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from echoflow.accounts.models import Organization
from tests.test_api_helpers import (
    _fresh_rate_limits,  # noqa: F401
    failing_alert,
    make_schedule,
    queued_run,
    token_for,
    user_in,
)

MAX_EXAMPLES = int(os.environ.get("ECHOFLOW_API_FUZZ_EXAMPLES", "30"))
MODE = os.environ.get("ECHOFLOW_API_FUZZ_MODE", "positive")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": MODE, "max-examples": MAX_EXAMPLES, "database": "none", "no-shrink": True},
        # Examples and fuzzing only: the coverage phase's unexpected methods and the stateful phase's
        # link-following would multiply the requests well past this suite's time budget.
        "phases": {
            "coverage": {"enabled": False},
            "stateful": {"enabled": False},
            "fuzzing": {"error-feedback": {"enabled": False}, "extra-data-sources": {"responses": False}},
        },
    }
)


# Loaded when the module is collected: serving the schema touches no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)


@pytest.fixture(autouse=True)
def _unthrottled(settings: Any) -> None:
    # One token sends every generated request: the per-token limit would otherwise end the run early.
    settings.API_RATE_LIMIT = "1000000/minute"


@pytest.fixture(autouse=True)
def _keep_the_test_transaction() -> Iterator[None]:
    """The WSGI handler closes the database connection after each request, which would end the test's
    transaction; Django's own test client keeps it open the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def admin_token(db: None) -> str:
    """An admin of an organization holding a few objects, so that generated ids sometimes hit something."""
    org = Organization.objects.create(name="Fuzz", slug="fuzz")
    for index in range(3):
        schedule = make_schedule(org, f"fuzz-{index}")
        queued_run(org, schedule)
        failing_alert(schedule)
    return token_for(user_in(org, "admin"), org, name="fuzzer")


@schema.parametrize()
# The token fixture is shared by the generated requests on purpose: it is the caller, not the input.
@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    max_examples=MAX_EXAMPLES,
)
def test_api_conforms_to_its_schema(case: Any, admin_token: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, checks=CHECKS)
