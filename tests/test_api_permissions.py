"""The permission matrix: every endpoint x every role x own organization / another organization's object.

Own organization: the role's permissions decide (success, or 403 naming what is missing). Another organization:
a role allowed to act gets 404, the same answer as for an id that does not exist at all; a role not allowed gets
the 403 it would get at home (the refusal does not depend on the object, so it reveals nothing). Collections asked
for in another organization (``X-EchoFlow-Org``) are a 404 whatever the role. No credentials: 401 everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from echoflow.accounts.models import ROLE_PERMISSIONS, ApiToken, Organization
from echoflow.accounts.services import membership_set, token_create
from runs.models import RunStatus
from tests.test_api_helpers import (
    API,
    ROLES,
    _fresh_rate_limits,  # noqa: F401
    client_for,
    failing_alert,
    make_schedule,
    queued_run,
    run_in,
    running_event_run,
    schedule_data,
    user_in,
)

pytestmark = pytest.mark.django_db

READ, WRITE, RUN, DELETE = "schedules:read", "schedules:write", "schedules:run", "schedules:delete"
ADMIN, SESSION, MEMBER = "admin", "session", "member"


def _backfill_range() -> dict[str, str]:
    end = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return {"from": (end - timedelta(hours=3)).isoformat(), "to": end.isoformat()}


def _member(org: Organization) -> int:
    user = get_user_model().objects.create_user(f"member-{org.slug}-{get_user_model().objects.count()}")
    return membership_set(organization=org, user=user, role="viewer").pk


def _token(org: Organization) -> int:
    """A token in ``org`` belonging to whoever asks (an admin sees every token of the org, others their own)."""
    return 0  # filled in by the test: it must belong to the caller


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # "{id}" is replaced by what ``target`` returns
    needs: frozenset[str]
    success: int
    target: Callable[[Organization], int] | None = None  # None: a collection
    body: Callable[[], dict[str, Any]] | None = None
    headers: dict[str, str] | None = None


def _schedule(org: Organization) -> int:
    return make_schedule(org, f"target-{org.slug}", cron="0 * * * *").pk


def _paused(org: Organization) -> int:
    schedule = make_schedule(org, f"paused-{org.slug}")
    from schedules.services import schedule_pause

    schedule_pause(schedule=schedule, note="for the test")
    return schedule.pk


def _alert(org: Organization) -> int:
    """An open consecutive-failures alert about a fresh schedule of ``org``."""
    schedule = make_schedule(org, f"alerting-{org.slug}")
    return failing_alert(schedule).pk


ENDPOINTS = [
    Endpoint("schedules.list", "get", "/schedules/", frozenset({READ}), 200),
    Endpoint("schedules.create", "post", "/schedules/", frozenset({WRITE}), 201, body=lambda: schedule_data("new")),
    Endpoint(
        "schedules.preview",
        "post",
        "/schedules/preview/",
        frozenset({READ}),
        200,
        body=lambda: {"trigger_kind": "interval", "interval_seconds": 600},
    ),
    Endpoint("schedules.get", "get", "/schedules/{id}/", frozenset({READ}), 200, _schedule),
    Endpoint(
        "schedules.put",
        "put",
        "/schedules/{id}/",
        frozenset({WRITE}),
        200,
        _schedule,
        body=lambda: {**schedule_data("renamed"), "version": 1},
    ),
    Endpoint(
        "schedules.patch",
        "patch",
        "/schedules/{id}/",
        frozenset({WRITE}),
        200,
        _schedule,
        body=lambda: {"description": "x", "version": 1},
    ),
    Endpoint("schedules.delete", "delete", "/schedules/{id}/", frozenset({DELETE}), 204, _schedule),
    Endpoint("schedules.enable", "post", "/schedules/{id}/enable/", frozenset({WRITE}), 200, _paused),
    Endpoint(
        "schedules.disable",
        "post",
        "/schedules/{id}/disable/",
        frozenset({WRITE}),
        200,
        _schedule,
        body=lambda: {"note": "maintenance"},
    ),
    Endpoint("schedules.run_now", "post", "/schedules/{id}/run-now/", frozenset({RUN}), 201, _schedule),
    Endpoint(
        "schedules.backfill", "post", "/schedules/{id}/backfill/", frozenset({RUN}), 200, _schedule, _backfill_range
    ),
    Endpoint("schedules.runs", "get", "/schedules/{id}/runs/", frozenset({READ}), 200, _schedule),
    Endpoint("runs.list", "get", "/runs/", frozenset({READ}), 200),
    Endpoint(
        "runs.create",
        "post",
        "/runs/",
        frozenset({WRITE, RUN}),
        201,
        body=lambda: {"action_kind": "python", "action_name": "echoflow.noop"},
    ),
    Endpoint("runs.get", "get", "/runs/{id}/", frozenset({READ}), 200, lambda org: queued_run(org).pk),
    Endpoint(
        "runs.retry",
        "post",
        "/runs/{id}/retry/",
        frozenset({RUN}),
        200,
        lambda org: run_in(org, RunStatus.FAILED, finished_at=timezone.now()).pk,
    ),
    Endpoint("runs.cancel", "post", "/runs/{id}/cancel/", frozenset({RUN}), 200, lambda org: queued_run(org).pk),
    Endpoint(
        "runs.report",
        "post",
        "/runs/{id}/report/",
        frozenset({RUN}),
        200,
        lambda org: running_event_run(org).pk,
        body=lambda: {"status": "succeeded", "output": {"rows": 3}},
    ),
    Endpoint("audit.list", "get", "/audit/", frozenset({READ}), 200),
    Endpoint("metrics.summary", "get", "/metrics/summary/?window=24h", frozenset({READ}), 200),
    Endpoint(
        "metrics.summary_of_schedule",
        "get",
        "/metrics/summary/?window=7d&schedule={id}",
        frozenset({READ}),
        200,
        _schedule,
    ),
    Endpoint("metrics.by_schedule", "get", "/metrics/summary/by-schedule/?window=24h", frozenset({READ}), 200),
    Endpoint("alerts.list", "get", "/alerts/?status=open", frozenset({READ}), 200),
    Endpoint("alerts.get", "get", "/alerts/{id}/", frozenset({READ}), 200, _alert),
    Endpoint("alerts.acknowledge", "post", "/alerts/{id}/acknowledge/", frozenset({RUN}), 200, _alert),
    Endpoint("orgs.current", "get", "/orgs/current/", frozenset({MEMBER}), 200),
    Endpoint(
        "orgs.update", "patch", "/orgs/current/", frozenset({ADMIN}), 200, body=lambda: {"max_concurrent_runs": 7}
    ),
    Endpoint("members.list", "get", "/orgs/current/members/", frozenset({ADMIN}), 200),
    Endpoint(
        "members.create",
        "post",
        "/orgs/current/members/",
        frozenset({ADMIN}),
        201,
        body=lambda: {"username": get_user_model().objects.create_user("newcomer").get_username(), "role": "editor"},
    ),
    Endpoint("members.get", "get", "/orgs/current/members/{id}/", frozenset({ADMIN}), 200, _member),
    Endpoint(
        "members.patch",
        "patch",
        "/orgs/current/members/{id}/",
        frozenset({ADMIN}),
        200,
        _member,
        body=lambda: {"role": "operator"},
    ),
    Endpoint("members.delete", "delete", "/orgs/current/members/{id}/", frozenset({ADMIN}), 204, _member),
    Endpoint("roles.list", "get", "/orgs/current/roles/", frozenset({ADMIN}), 200),
    Endpoint("tokens.list", "get", "/tokens/", frozenset({MEMBER}), 200),
    Endpoint("tokens.create", "post", "/tokens/", frozenset({SESSION}), 201, body=lambda: {"name": "ci"}),
    Endpoint("tokens.get", "get", "/tokens/{id}/", frozenset({MEMBER}), 200, _token),
    Endpoint("tokens.revoke", "post", "/tokens/{id}/revoke/", frozenset({MEMBER}), 200, _token),
]


def _allowed(role: str, needs: frozenset[str]) -> bool:
    """What the role may do when it calls with an unscoped API token."""
    if SESSION in needs:
        return False
    if ADMIN in needs:
        return role == "admin"
    return needs - {MEMBER} <= ROLE_PERMISSIONS[role]


def _call(client: APIClient, endpoint: Endpoint, object_id: int | None, **extra: Any) -> Any:
    path = API + endpoint.path.replace("{id}", str(object_id))
    body = endpoint.body() if endpoint.body else None
    return getattr(client, endpoint.method)(path, body, format="json", **extra)


def _target(endpoint: Endpoint, org: Organization, role: str) -> int:
    assert endpoint.target is not None
    if endpoint.target is _token:
        # The caller's own second token (in ``org``'s case for the other organization: its member's).
        owner = user_in(org, role)
        return token_create(user=owner, organization=org, name="spare")[0].pk
    return endpoint.target(org)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_own_organization(endpoint: Endpoint, role: str, org: Organization) -> None:
    client = client_for(org, role)
    object_id = _target(endpoint, org, role) if endpoint.target else None
    response = _call(client, endpoint, object_id)
    if _allowed(role, endpoint.needs):
        assert response.status_code == endpoint.success, response.content
    else:
        assert response.status_code == 403, response.content
        body = response.json()
        assert body["code"] == "permission_denied"
        missing = sorted(endpoint.needs - ROLE_PERMISSIONS[role] - {MEMBER, ADMIN, SESSION})
        if ADMIN in endpoint.needs:
            assert "admin role" in body["detail"]
        elif SESSION in endpoint.needs:
            assert "API tokens cannot create tokens" in body["detail"]
        else:
            assert all(name in body["detail"] for name in missing), body["detail"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_other_organization(endpoint: Endpoint, role: str, org: Organization, other_org: Organization) -> None:
    client = client_for(org, role)
    if endpoint.target is None:
        response = _call(client, endpoint, None, HTTP_X_ECHOFLOW_ORG=other_org.slug)
        assert response.status_code == 404, response.content
        return
    foreign = _target(endpoint, other_org, role)
    response = _call(client, endpoint, foreign)
    if _allowed(role, endpoint.needs):
        assert response.status_code == 404, response.content
        missing = _call(client, endpoint, 10**9)
        assert (missing.status_code, missing.json()) == (404, response.json())
    else:
        assert response.status_code == 403, response.content


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_no_credentials_is_401(endpoint: Endpoint, org: Organization) -> None:
    response = _call(APIClient(), endpoint, 1)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json()["code"] == "not_authenticated"


def test_token_scopes_narrow_the_role(org: Organization) -> None:
    client = client_for(org, "admin", scopes=[READ])
    schedule_id = _schedule(org)
    assert client.get(f"{API}/schedules/{schedule_id}/").status_code == 200
    refused = client.delete(f"{API}/schedules/{schedule_id}/")
    assert refused.status_code == 403
    assert "schedules:delete" in refused.json()["detail"] and "scopes" in refused.json()["detail"]
    # A scoped admin token is not an admin: members are out of reach.
    assert client.get(f"{API}/orgs/current/members/").status_code == 403


def test_spare_tokens_are_per_user_for_non_admins(org: Organization) -> None:
    viewer = client_for(org, "viewer")
    editor_token = token_create(user=user_in(org, "editor"), organization=org, name="editor-spare")[0]
    assert viewer.get(f"{API}/tokens/{editor_token.pk}/").status_code == 404
    assert viewer.post(f"{API}/tokens/{editor_token.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=editor_token.pk).revoked_at is None
    admin = client_for(org, "admin")
    assert admin.post(f"{API}/tokens/{editor_token.pk}/revoke/").status_code == 200
    assert ApiToken.objects.get(pk=editor_token.pk).revoked_at is not None
