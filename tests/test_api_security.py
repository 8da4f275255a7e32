"""Authentication, the current organization, tokens, members, rate limits, the audit log and the commands that set
all of this up."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from echoflow.accounts.models import ApiToken, Membership, Organization
from echoflow.accounts.services import membership_set, token_create, token_hash
from echoflow.audit.models import AuditEntry
from schedules.models import Schedule
from tests.test_api_helpers import (
    API,
    _fresh_rate_limits,  # noqa: F401
    client_for,
    client_with,
    make_schedule,
    schedule_data,
    token_for,
    user_in,
)

pytestmark = pytest.mark.django_db


# --- bearer tokens ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer", "no token after 'Bearer'"),
        ("Bearer not-a-token", "malformed"),
        ("Bearer ef_0000abcd_" + "x" * 40, "not valid"),
    ],
)
def test_bad_tokens_are_401_with_a_reason(org: Organization, header: str, message: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(f"{API}/schedules/")
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_token_is_stored_hashed_and_records_its_last_use(org: Organization) -> None:
    user = user_in(org, "viewer")
    plaintext = token_for(user, org)
    token = ApiToken.objects.get()
    assert plaintext.startswith(f"ef_{token.prefix}_")
    assert token.secret_hash == token_hash(plaintext) and plaintext not in token.secret_hash
    assert token.last_used_at is None
    assert client_with(plaintext).get(f"{API}/schedules/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_revoked_token_stops_working(org: Organization) -> None:
    user = user_in(org, "admin")
    plaintext = token_for(user, org, name="deploy")
    client = client_with(plaintext)
    token = ApiToken.objects.get(name="deploy")
    assert client.post(f"{API}/tokens/{token.pk}/revoke/").status_code == 200
    response = client.get(f"{API}/schedules/")
    assert response.status_code == 401 and "'deploy' was revoked" in response.json()["detail"]
    entry = AuditEntry.objects.get(action="token.revoke")
    assert (entry.actor_label, entry.target_id) == ("token:deploy", str(token.pk))


def test_a_token_dies_with_its_users_membership_or_account(org: Organization) -> None:
    user = user_in(org, "editor")
    client = client_with(token_for(user, org))
    Membership.objects.filter(user=user).delete()
    gone = client.get(f"{API}/schedules/")
    assert gone.status_code == 401
    assert "no longer a member" in gone.json()["detail"]
    membership_set(organization=org, user=user, role="editor")
    assert client.get(f"{API}/schedules/").status_code == 200
    # The role is read with the token on every request: a demotion takes effect on the next one.
    membership_set(organization=org, user=user, role="viewer")
    me = client.get(f"{API}/orgs/current/")
    assert me.status_code == 200 and me.json()["role"] == "viewer", me.content
    assert client.post(f"{API}/schedules/", {"name": "x"}, format="json").status_code == 403
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert client.get(f"{API}/schedules/").status_code == 401


def test_a_token_acts_only_in_its_own_organization(org: Organization, other_org: Organization) -> None:
    user = user_in(org, "admin")
    membership_set(organization=other_org, user=user, role="admin")
    client = client_with(token_for(user, org))
    make_schedule(other_org, "theirs")
    assert client.get(f"{API}/schedules/").json()["results"] == []
    assert client.get(f"{API}/schedules/?org=globex").status_code == 404


# --- sessions (the web page) ------------------------------------------------------------------------------------------
def test_session_requests_need_csrf_for_writes(org: Organization) -> None:
    user = user_in(org, "editor")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(f"{API}/schedules/").status_code == 200
    refused = client.post(f"{API}/schedules/", schedule_data(), format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert Schedule.objects.count() == 0
    token = "c" * 32  # what the page's CSRF cookie holds, echoed in the header by the page's script
    client.cookies["csrftoken"] = token
    accepted = client.post(f"{API}/schedules/", schedule_data(), format="json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
    entry = AuditEntry.objects.get(action="schedule.create")
    assert (entry.actor_label, entry.source) == (user.get_username(), "api")


def test_session_users_choose_among_their_organizations(org: Organization, other_org: Organization) -> None:
    user = user_in(org, "viewer", username="ada")
    membership_set(organization=other_org, user=user, role="admin")
    make_schedule(other_org, "theirs")
    client = APIClient()
    client.force_login(user)
    # Without a choice: the first by name (Acme).
    assert client.get(f"{API}/orgs/current/").json()["slug"] == "acme"
    assert client.get(f"{API}/orgs/current/", HTTP_X_ECHOFLOW_ORG="globex").json()["role"] == "admin"
    assert [r["name"] for r in client.get(f"{API}/schedules/?org=globex").json()["results"]] == ["theirs"]
    assert client.get(f"{API}/schedules/?org=initech").status_code == 404
    assert client.get(f"{API}/schedules/?org=bad%20slug").status_code == 400


def test_a_user_without_organization_is_told_so(db: None) -> None:
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("loner"))
    response = client.get(f"{API}/schedules/")
    assert response.status_code == 403 and "not a member of any organization" in response.json()["detail"]


# --- tokens through the API -------------------------------------------------------------------------------------------
def test_a_signed_in_user_creates_a_token_whose_secret_is_shown_once(org: Organization) -> None:
    user = user_in(org, "operator")
    client = APIClient()
    client.force_login(user)
    created = client.post(f"{API}/tokens/", {"name": "ci", "scopes": ["schedules:read"]}, format="json")
    assert created.status_code == 201, created.content
    secret = created.json()["token"]
    assert created.json()["scopes"] == ["schedules:read"] and created.json()["prefix"] in secret
    listed = client.get(f"{API}/tokens/").json()["results"]
    assert [row["name"] for row in listed] == ["ci"] and "token" not in listed[0]
    assert client_with(secret).get(f"{API}/schedules/").status_code == 200
    assert client_with(secret).post(f"{API}/schedules/{make_schedule(org).pk}/run-now/").status_code == 403
    entry = AuditEntry.objects.get(action="token.create")
    assert entry.changes["scopes"] == ["schedules:read"] and entry.actor_label == user.get_username()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "ci", "scopes": ["schedules:delete"]}, "scopes", "more than you may grant"),
        ({"name": "ci", "scopes": ["root"]}, "scopes", "'root' is not a permission"),
        ({"name": "ci", "scopes": "schedules:read"}, "scopes", "must be a list"),
        ({"name": ""}, "name", "is required"),
        ({"name": "n" * 101}, "name", "the limit is 100"),
    ],
)
def test_token_creation_names_a_bad_field_and_writes_nothing(
    org: Organization, body: dict[str, Any], field: str, message: str
) -> None:
    client = APIClient()
    client.force_login(user_in(org, "operator"))
    before = (ApiToken.objects.count(), AuditEntry.objects.count())
    response = client.post(f"{API}/tokens/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["errors"][field][0]
    assert (ApiToken.objects.count(), AuditEntry.objects.count()) == before


# --- members (admin) --------------------------------------------------------------------------------------------------
def test_admin_manages_members_but_not_the_last_admin_away(org: Organization) -> None:
    admin = client_for(org, "admin")
    get_user_model().objects.create_user("grace")
    added = admin.post(f"{API}/orgs/current/members/", {"username": "grace", "role": "editor"}, format="json")
    assert added.status_code == 201 and added.json()["permissions"] == [
        "schedules:read",
        "schedules:run",
        "schedules:write",
    ]
    twice = admin.post(f"{API}/orgs/current/members/", {"username": "grace", "role": "viewer"}, format="json")
    assert twice.status_code == 400 and "already a member" in twice.json()["errors"]["username"][0]
    nobody = admin.post(f"{API}/orgs/current/members/", {"username": "nobody", "role": "viewer"}, format="json")
    assert "there is no user named 'nobody'" in nobody.json()["errors"]["username"][0]
    me = Membership.objects.get(user__username="admin-acme")
    demote = admin.patch(f"{API}/orgs/current/members/{me.pk}/", {"role": "viewer"}, format="json")
    assert demote.status_code == 400 and "last admin" in demote.json()["errors"]["role"][0]
    assert admin.delete(f"{API}/orgs/current/members/{me.pk}/").status_code == 400
    grace = Membership.objects.get(user__username="grace")
    token_create(user=grace.user, organization=org, name="grace-ci")
    assert admin.delete(f"{API}/orgs/current/members/{grace.pk}/").status_code == 204
    assert ApiToken.objects.get(name="grace-ci").revoked_at is not None
    actions = list(AuditEntry.objects.filter(action__startswith="membership.").values_list("action", flat=True))
    assert actions.count("membership.remove") == 1


def test_roles_and_organization_settings(org: Organization) -> None:
    admin = client_for(org, "admin")
    roles = admin.get(f"{API}/orgs/current/roles/").json()
    assert roles[0] == {"role": "viewer", "permissions": ["schedules:read"]}
    changed = admin.patch(f"{API}/orgs/current/", {"name": "Acme Inc", "max_concurrent_runs": 20}, format="json")
    assert changed.status_code == 200 and changed.json()["name"] == "Acme Inc"
    refused = admin.patch(f"{API}/orgs/current/", {"max_concurrent_runs": 0, "slug": "x"}, format="json")
    assert set(refused.json()["errors"]) == {"max_concurrent_runs", "slug"}
    org.refresh_from_db()
    assert (org.name, org.slug, org.max_concurrent_runs) == ("Acme Inc", "acme", 20)


# --- rate limit -------------------------------------------------------------------------------------------------------
def test_each_token_has_its_own_rate_limit(org: Organization, settings: Any) -> None:
    settings.API_RATE_LIMIT = "3/minute"
    busy = client_for(org, "viewer")
    codes = [busy.get(f"{API}/schedules/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    throttled = busy.get(f"{API}/schedules/")
    assert throttled.json()["code"] == "throttled"
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert client_for(org, "editor").get(f"{API}/schedules/").status_code == 200


# --- audit log --------------------------------------------------------------------------------------------------------
def test_audit_log_filters(org: Organization, other_org: Organization) -> None:
    editor = client_for(org, "editor")
    first = editor.post(f"{API}/schedules/", schedule_data("a"), format="json").json()["id"]
    second = editor.post(f"{API}/schedules/", schedule_data("b"), format="json").json()["id"]
    editor.patch(f"{API}/schedules/{first}/", {"agent": "x", "version": 1}, format="json")
    editor.post(f"{API}/schedules/{second}/run-now/")
    make_schedule(other_org, "theirs")

    def actions(query: str) -> list[str]:
        response = editor.get(f"{API}/audit/?{query}")
        assert response.status_code == 200, response.content
        return [row["action"] for row in response.json()["results"]]

    assert actions(f"schedule={first}") == ["schedule.update", "schedule.create"]
    assert actions("action=schedule.run_now") == ["schedule.run_now"]
    assert actions("action=schedule.")[:2] == ["schedule.run_now", "schedule.update"]
    editor_id = get_user_model().objects.get(username="editor-acme").pk
    assert len(actions(f"user={editor_id}")) == 4
    assert actions("actor=token:editor-0&action=schedule.create") == ["schedule.create", "schedule.create"]
    assert actions("created_after=2999-01-01T00:00:00Z") == []
    assert "theirs" not in str(editor.get(f"{API}/audit/").json())


def test_admin_site_lists_and_revokes_tokens(org: Organization, admin_client: Any) -> None:
    token_create(user=user_in(org, "viewer"), organization=org, name="laptop")
    changelist = admin_client.get("/admin/accounts/apitoken/")
    assert changelist.status_code == 200 and b"laptop" in changelist.content
    token = ApiToken.objects.get(name="laptop")
    admin_client.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEntry.objects.get(action="token.revoke").source == "admin"


# --- schema and docs --------------------------------------------------------------------------------------------------
def test_openapi_schema_and_swagger_ui_are_served(db: None) -> None:
    schema = APIClient().get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/schedules/{id}/run-now/" in paths and "/api/v1/runs/{id}/report/" in paths
    assert "409" in paths["/api/v1/schedules/{id}/"]["patch"]["responses"]
    assert APIClient().get("/api/docs/").status_code == 200


# --- management commands ----------------------------------------------------------------------------------------------
def test_commands_set_up_an_organization_a_user_and_a_working_token(db: None) -> None:
    out = StringIO()
    call_command("create_org", "Initech", stdout=out)
    call_command("create_org", "Initech", stdout=out)
    call_command("create_user", "milton", "--org", "initech", "--role", "operator", stdout=out)
    assert "Created organization 'initech'" in out.getvalue() and "already exists" in out.getvalue()
    assert "'milton' is operator in 'initech'" in out.getvalue()
    token_out, token_err = StringIO(), StringIO()
    call_command(
        "create_token", "--user", "milton", "--org", "initech", "--name", "stapler", stdout=token_out, stderr=token_err
    )
    plaintext = token_out.getvalue().strip()
    assert "Store it now" in token_err.getvalue()
    body = client_with(plaintext).get(f"{API}/orgs/current/").json()
    assert (body["slug"], body["role"]) == ("initech", "operator")
    assert AuditEntry.objects.get(action="token.create").actor_label == "command:create_token"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create_token", "--user", "nobody", "--org", "acme", "--name", "x"], "user: there is no user"),
        (["create_token", "--user", "viewer-acme", "--org", "nowhere", "--name", "x"], "org: no organization"),
        (
            ["create_token", "--user", "viewer-acme", "--org", "acme", "--name", "x", "--scopes", "schedules:write"],
            "scopes:",
        ),
        (["create_user", "someone", "--org", "nowhere"], "org: no organization"),
        (["create_org", "Acme", "--slug", "Not A Slug"], "slug:"),
    ],
)
def test_commands_explain_bad_input(org: Organization, args: list[str], message: str) -> None:
    user_in(org, "viewer")
    with pytest.raises(CommandError, match=message):
        call_command(*args, stdout=StringIO(), stderr=StringIO())
