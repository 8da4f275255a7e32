"""The editor drawer's form: what it shows, and how what the user typed becomes the data the services take.

Validation is not here: it is schedules.validation.schedule_clean, the rules and messages every entry point
shares. This module only turns text into values (JSON, numbers, local date-times in the schedule's zone) and
leaves anything it cannot read to the shared rules, so a mistake gets the same message as through the API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Field

from echoflow.accounts.models import Organization
from runs.actions import registered_actions
from runs.models import Run
from schedules.models import ActionKind, MisfirePolicy, OverlapPolicy, Schedule
from schedules.triggers import TriggerKind
from schedules.validation import schedule_clean
from schedules.web.formatting import zone_or_utc


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    widget: str = "text"  # text, number, select, textarea, datetime, radio
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    placeholder: str = ""
    show_when: str = ""  # "trigger_kind=cron": shown only for that choice (page.js toggles it)
    datalist: str = ""
    minimum: int | None = None
    required: bool = False


@dataclass(frozen=True)
class FieldGroup:
    title: str
    fields: tuple[FieldSpec, ...]
    collapsed: bool = False
    note: str = ""


def _default(name: str) -> Any:
    model_field = Schedule._meta.get_field(name)
    assert isinstance(model_field, Field)
    return model_field.get_default()


GROUPS: tuple[FieldGroup, ...] = (
    FieldGroup(
        "Schedule",
        (
            FieldSpec("name", "Name", required=True, placeholder="Weekday sales report"),
            FieldSpec("agent", "Agent", help="The execution target; the table filters by it.", datalist="agents"),
            FieldSpec("description", "Description", widget="textarea"),
        ),
    ),
    FieldGroup(
        "Action",
        (
            FieldSpec("action_kind", "Action kind", widget="select", choices=tuple(ActionKind.choices)),
            FieldSpec(
                "action_name",
                "Action name",
                help="A registered callable (python), the event type (event) or the task name (celery).",
                datalist="actions",
                placeholder="echoflow.echo",
            ),
            FieldSpec(
                "action_config",
                "Action config (JSON)",
                widget="json",
                help='An object. HTTP needs {"url": "https://…"}; method, headers and queue are optional.',
            ),
            FieldSpec("payload", "Payload (JSON)", widget="json", help="The action's input, any JSON value."),
        ),
    ),
    FieldGroup(
        "When",
        (
            FieldSpec(
                "trigger_kind",
                "Trigger",
                widget="radio",
                choices=tuple((kind, TriggerKind(kind).label) for kind in ("cron", "interval", "once")),
            ),
            FieldSpec(
                "cron",
                "Cron expression",
                placeholder="0 8 * * 1-5",
                help="5 fields (minute hour day-of-month month day-of-week), optionally a leading seconds "
                "field; or a macro such as @daily or @hourly.",
                show_when="trigger_kind=cron",
            ),
            FieldSpec(
                "interval_seconds",
                "Every (seconds)",
                widget="number",
                minimum=1,
                placeholder="1800",
                show_when="trigger_kind=interval",
            ),
            FieldSpec("run_at", "At", widget="datetime", help="In the time zone below.", show_when="trigger_kind=once"),
            FieldSpec("timezone", "Time zone", datalist="zones", required=True, help="IANA name, e.g. Europe/Berlin."),
            FieldSpec("start_at", "Start", widget="datetime", help="Optional; no slot before it."),
            FieldSpec("end_at", "End", widget="datetime", help="Optional; no slot after it."),
            FieldSpec("max_runs", "Max runs", widget="number", minimum=1, help="Optional; stop after this many."),
        ),
    ),
    FieldGroup(
        "Misfires and overlap",
        (
            FieldSpec("misfire_policy", "Missed slots", widget="select", choices=tuple(MisfirePolicy.choices)),
            FieldSpec(
                "catchup_window_seconds",
                "Catch-up window (seconds)",
                widget="number",
                minimum=0,
                help="Missed slots older than this are counted as missed, never run.",
            ),
            FieldSpec("max_concurrency", "Max concurrent runs", widget="number", minimum=1),
            FieldSpec(
                "overlap_policy", "When the limit is reached", widget="select", choices=tuple(OverlapPolicy.choices)
            ),
        ),
        note=f"Defaults: coalesce, 1 h window, {_default('max_concurrency')} at a time, skip.",
    ),
    FieldGroup(
        "Retries and limits",
        (
            FieldSpec("max_attempts", "Max attempts", widget="number", minimum=1),
            FieldSpec("backoff_seconds", "Backoff (seconds)", help="Waits between attempts, comma-separated."),
            FieldSpec("timeout_seconds", "Timeout per attempt (seconds)", widget="number", minimum=1),
            FieldSpec("jitter_seconds", "Jitter (seconds)", widget="number", minimum=0),
            FieldSpec("priority", "Priority (0-9)", widget="number", minimum=0),
            FieldSpec(
                "pause_after_failures",
                "Pause after failed runs",
                widget="number",
                minimum=1,
                help="Optional; pause the schedule after this many failed runs in a row.",
            ),
        ),
        note="Defaults: 3 attempts, backoff 30, 60, 300, 900, 3600 s, 300 s timeout.",
    ),
)
SPECS: dict[str, FieldSpec] = {spec.name: spec for group in GROUPS for spec in group.fields}
EDITOR_FIELDS = tuple(SPECS)
DATETIME_FIELDS = ("run_at", "start_at", "end_at")
JSON_FIELDS = ("action_config", "payload")
# Blank means "the default" for these (the model's default), and "none" for the nullable ones.
DEFAULTED_FIELDS = (
    "catchup_window_seconds",
    "jitter_seconds",
    "max_concurrency",
    "max_attempts",
    "timeout_seconds",
    "priority",
    "misfire_policy",
    "overlap_policy",
    "action_kind",
)
NULLABLE_NUMBERS = ("interval_seconds", "max_runs", "pause_after_failures")
# Messages of the shared rules are often the rest of a sentence whose subject is the field ("is required").
_PREDICATES = ("is ", "must ", "needs ", "fires ", "has ", "was ")


def field_message(name: str, message: str) -> str:
    """The API's message as a sentence: 'Name is required' from ('name', 'is required'); a message that is
    already a whole sentence keeps its words and only gets a capital letter ('Minute: 61 is outside 0-59')."""
    spec = SPECS.get(name)
    if message.startswith(_PREDICATES):
        subject = spec.label if spec else name.replace("_", " ").capitalize()
        return f"{subject} {message}"
    if message[:1].isascii() and message[:1].islower():
        return message[:1].upper() + message[1:]
    return message


# --- values shown in the form -----------------------------------------------------------------------------------
def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) if value not in (None, {}) else "{}"


def _local_input(moment: datetime | None, zone_name: str) -> str:
    if moment is None:
        return ""
    local = moment.astimezone(zone_or_utc(zone_name))
    return local.strftime("%Y-%m-%dT%H:%M:%S" if local.second else "%Y-%m-%dT%H:%M")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def editor_initial(*, schedule: Schedule | None = None) -> dict[str, str]:
    """The form's values for an existing schedule, or the defaults for a new one."""
    values: dict[str, str] = {}
    for name in EDITOR_FIELDS:
        if schedule is not None:
            raw = getattr(schedule, name)
        elif name in ("trigger_kind",):
            raw = TriggerKind.CRON
        elif name in DATETIME_FIELDS or name in NULLABLE_NUMBERS or name in ("cron", "name", "agent"):
            raw = None
        else:
            raw = _default(name)
        if name in JSON_FIELDS:
            values[name] = _json_text(raw)
        elif name in DATETIME_FIELDS:
            zone = schedule.timezone if schedule is not None else "UTC"
            values[name] = _local_input(raw, zone)
        else:
            values[name] = _text(raw)
    return values


def editor_from_run(*, run: Run, name: str) -> dict[str, str]:
    """A new schedule doing what ``run`` did: its action, agent and payload ("make recurring")."""
    values = editor_initial()
    source = run.schedule
    values.update(
        name=name,
        agent=source.agent if source is not None else "",
        action_kind=run.action_kind,
        action_name=run.action_name,
        action_config=_json_text(run.action_config),
        payload=_json_text(run.payload),
        timeout_seconds=str(run.timeout_seconds),
        priority=str(run.priority),
        backoff_seconds=_text(run.backoff_seconds),
    )
    if source is not None:
        values["max_attempts"] = str(source.max_attempts)
        values["timezone"] = source.timezone
    return values


def editor_from_post(post: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(post.get(name, "")) for name in EDITOR_FIELDS}


# --- values handed to the services ------------------------------------------------------------------------------
@dataclass
class ParsedEditor:
    data: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)


def aware_text(text: str, zone_name: str) -> str | None:
    """A datetime-local value read in the schedule's zone, as ISO 8601 with its offset; anything unreadable is
    passed on as typed, for the shared rules to name."""
    text = text.strip()
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        return text
    if naive.tzinfo is not None:
        return naive.isoformat()
    return naive.replace(tzinfo=zone_or_utc(zone_name)).isoformat()


def _backoff(text: str) -> list[Any]:
    items: list[Any] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            items.append(int(part))
        except ValueError:
            items.append(part)  # the shared rule says what a backoff must be
    return items


def editor_parse(values: Mapping[str, str], *, instance: Schedule | None = None) -> ParsedEditor:
    """The service data for ``values``; for an update, only the fields the user changed (so that, for example,
    saving a once schedule whose time has passed does not re-check that time)."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    zone = values.get("timezone", "").strip() or "UTC"
    for name in EDITOR_FIELDS:
        text = values.get(name, "")
        if name in JSON_FIELDS:
            if not text.strip():
                data[name] = {}
                continue
            try:
                data[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                errors[name] = f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        elif name in DATETIME_FIELDS:
            data[name] = aware_text(text, zone)
        elif name == "backoff_seconds":
            data[name] = _backoff(text)
        elif name in DEFAULTED_FIELDS and not text.strip():
            data[name] = _default(name)
        elif name in NULLABLE_NUMBERS:
            data[name] = text.strip() or None
        else:
            data[name] = text.strip() if name != "description" else text
    # Fields of the other trigger kinds are hidden in the form; what they still hold means nothing.
    kind = values.get("trigger_kind", "")
    owners = (("cron", TriggerKind.CRON), ("interval_seconds", TriggerKind.INTERVAL), ("run_at", TriggerKind.ONCE))
    for name, owner in owners:
        if kind != owner:
            data[name] = "" if name == "cron" else None
            errors.pop(name, None)
    if instance is not None:
        before = editor_initial(schedule=instance)
        # A local date-time means another instant in another zone; another kind re-reads every trigger field.
        zone_changed = before["timezone"] != values.get("timezone", "")
        kind_changed = before["trigger_kind"] != kind
        changed = {
            name
            for name in EDITOR_FIELDS
            if values.get(name, "") != before[name]
            or (zone_changed and name in DATETIME_FIELDS)
            or (kind_changed and name in ("cron", "interval_seconds", "run_at"))
        }
        data = {name: value for name, value in data.items() if name in changed}
    return ParsedEditor(data=data, errors=errors)


def editor_differences(values: Mapping[str, str], schedule: Schedule) -> list[tuple[str, str, str]]:
    """(label, saved now, yours) for every field where the saved schedule differs from the user's form."""
    saved = editor_initial(schedule=schedule)
    return [
        (SPECS[name].label, saved[name] or "(empty)", values.get(name, "") or "(empty)")
        for name in EDITOR_FIELDS
        if saved[name].strip() != values.get(name, "").strip()
    ]


def action_names() -> list[str]:
    return registered_actions()


def editor_check(
    values: Mapping[str, str],
    *,
    organization: Organization,
    instance: Schedule | None,
    now: datetime,
    run_now_if_past: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The service data and every problem with it: what the form could not read, then the shared rules."""
    parsed = editor_parse(values, instance=instance)
    if run_now_if_past:
        parsed.data["run_now_if_past"] = True
    errors = dict(parsed.errors)
    data = {name: value for name, value in parsed.data.items() if name not in errors}
    try:
        schedule_clean(data, organization=organization, instance=instance, now=now)
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, messages[0])
    return parsed.data, errors
