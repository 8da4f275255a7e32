"""A run's success as a function, ``echoflow_run_succeed``, and a function that records it and claims the next run
of the batch in the same transaction, ``echoflow_run_succeed_then_claim``.

``echoflow_run_succeed`` is the statement ``runs.attempt_writes`` sent for a succeeded attempt until now, unchanged:
it closes the attempt, moves the run, writes ``run.succeeded`` and the schedule's last outcome, and returns whether
the run moved (False when it was no longer running that attempt: cancelled, reaped; then only the attempt row is
closed, as on the ORM path).

``echoflow_run_succeed_then_claim`` is what a pool process calls between two runs of one ``execute_runs`` message:
the succeed, then ``echoflow_run_claim`` of the next run, one statement and so one round trip and one commit
instead of two of each (a commit waits for the WAL to reach the disk). Holding the finished run's rows and its
schedule's row while locking the next run's could deadlock: two processes each finishing a run of one schedule and
claiming the next run of the other would wait for each other's schedule row. So here the claim takes the next
run's schedule and run rows with SKIP LOCKED (``p_skip_locked``, a new argument of ``echoflow_run_claim``, false by
default: callers of the four-argument form are unchanged): if either is busy, the claim is not made and the caller
makes it on its own after the commit. The only lock this transaction then waits for after its finish is the
organization's, and whoever holds an organization's row (a claim, an admission) waits for no other row before it
commits. The result is one row: whether the finished run moved, then the claim's columns, all NULL when the claim
was not made here.

Reversing drops both functions and restores ``runs.0010``'s claim; SQLite has none of them and takes the ORM path.
"""

import importlib

from django.db import migrations

SUCCEED = r"""
CREATE OR REPLACE FUNCTION echoflow_run_succeed(
    p_run_id bigint, p_number integer, p_output jsonb, p_duration_ms integer, p_data jsonb, p_now timestamptz,
    p_occurred_at timestamptz
)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    moved_count bigint;
BEGIN
    WITH attempt AS (
        UPDATE runs_runattempt
        SET finished_at = p_now, outcome = 'succeeded', error = '', output = p_output, duration_ms = p_duration_ms
        WHERE run_id = p_run_id AND number = p_number AND outcome = 'running'
    ),
    moved AS (
        -- The status is compared as an expression (|| ''), which no index matches: the run is found by its key
        -- whatever the statistics say. As a plain column condition it let the planner, with statistics from a
        -- moment when no run was running, read the run through run_status_idx: every running run with it.
        UPDATE runs_run SET status = 'succeeded', finished_at = p_now, output = p_output, error = ''
        WHERE id = p_run_id AND attempts = p_number AND status || '' = 'running'
        RETURNING id, organization_id, schedule_id, attempts
    ),
    event AS (
        INSERT INTO events_outboxevent
            (event_id, type, occurred_at, organization_id, schedule_id, run_id, attempt, data, stream_id)
        SELECT gen_random_uuid(), 'run.succeeded', p_occurred_at, organization_id, schedule_id, id, attempts, p_data,
               ''
        FROM moved
    ),
    schedule AS (
        UPDATE schedules_schedule AS s
        SET last_run_at = p_now, last_run_status = 'succeeded', consecutive_failures = 0
        FROM moved WHERE s.id = moved.schedule_id
    )
    SELECT count(*) INTO moved_count FROM moved;
    RETURN moved_count > 0;
END
$fn$
"""

previous = importlib.import_module("runs.migrations.0010_run_claim_by_key")

OLD_SIGNATURE = "    p_run_id bigint, p_worker text, p_now timestamptz, p_occurred_at timestamptz\n)"
NEW_SIGNATURE = (
    "    p_run_id bigint, p_worker text, p_now timestamptz, p_occurred_at timestamptz,\n"
    "    p_skip_locked boolean DEFAULT false\n)"
)
LOCK_STEP = "    -- 1. The run, its schedule and its organization, locked together."
SKIP_LOCKED_STEP = """    -- 0. With p_skip_locked (from echoflow_run_succeed_then_claim): the run and its schedule,
    --    locked only if neither is busy; otherwise nothing is returned and the caller claims the run
    --    on its own. Step 1 then finds them locked by this transaction and waits only for the
    --    organization's row.
    IF p_skip_locked THEN
        PERFORM 1
        FROM runs_run AS r
        LEFT JOIN LATERAL (
            SELECT s0.id FROM schedules_schedule AS s0 WHERE s0.id = r.schedule_id FOR NO KEY UPDATE SKIP LOCKED
        ) AS s ON true
        WHERE r.id = p_run_id AND (r.schedule_id IS NULL OR s.id IS NOT NULL)
        FOR UPDATE OF r SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;

"""
for text in (OLD_SIGNATURE, LOCK_STEP):
    if previous.CREATE.count(text) != 1:
        raise RuntimeError(f"runs.0011: runs.0010's claim function no longer has {text!r}")
CLAIM = previous.CREATE.replace(OLD_SIGNATURE, NEW_SIGNATURE).replace(LOCK_STEP, SKIP_LOCKED_STEP + LOCK_STEP)

# The claim function's result columns, as runs.0008 declares them: the combined function returns them too.
CLAIM_COLUMNS = previous.CREATE.partition("RETURNS TABLE (\n")[2].partition("\n)\nLANGUAGE")[0]
if "signing_secret varchar, started boolean" not in CLAIM_COLUMNS:
    raise RuntimeError("runs.0011: runs.0010's claim function no longer declares its columns as expected")

SUCCEED_THEN_CLAIM = r"""
CREATE OR REPLACE FUNCTION echoflow_run_succeed_then_claim(
    p_run_id bigint, p_number integer, p_output jsonb, p_duration_ms integer, p_data jsonb, p_now timestamptz,
    p_occurred_at timestamptz, p_next_run_id bigint, p_worker text, p_next_now timestamptz,
    p_next_occurred_at timestamptz
)
RETURNS TABLE (
    succeeded boolean,
CLAIM_COLUMNS
)
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    succeeded := echoflow_run_succeed(p_run_id, p_number, p_output, p_duration_ms, p_data, p_now, p_occurred_at);
    -- No row (the next run or its schedule was busy, or it does not exist) leaves the claim's columns NULL.
    SELECT c.id, c.status, c.attempts, c.organization_id, c.schedule_id, c."trigger", c.slot, c.due_at,
           c.started_at, c.priority, c.max_attempts, c.backoff_seconds, c.timeout_seconds, c.action_kind,
           c.action_name, c.action_config, c.payload, c.trace_id, c.signing_secret, c.started
    INTO id, status, attempts, organization_id, schedule_id, "trigger", slot, due_at, started_at, priority,
         max_attempts, backoff_seconds, timeout_seconds, action_kind, action_name, action_config, payload, trace_id,
         signing_secret, started
    FROM echoflow_run_claim(p_next_run_id, p_worker, p_next_now, p_next_occurred_at, true) AS c;
    RETURN NEXT;
END
$fn$
""".replace("CLAIM_COLUMNS", CLAIM_COLUMNS)

DROP = [
    "DROP FUNCTION IF EXISTS echoflow_run_succeed_then_claim(bigint, integer, jsonb, integer, jsonb, timestamptz, "
    "timestamptz, bigint, text, timestamptz, timestamptz)",
    "DROP FUNCTION IF EXISTS echoflow_run_succeed(bigint, integer, jsonb, integer, jsonb, timestamptz, timestamptz)",
]
# The four-argument claim must go before the five-argument one is created: a call with four arguments would match
# both.
DROP_CLAIM = "DROP FUNCTION IF EXISTS echoflow_run_claim(bigint, text, timestamptz, timestamptz)"
DROP_NEW_CLAIM = "DROP FUNCTION IF EXISTS echoflow_run_claim(bigint, text, timestamptz, timestamptz, boolean)"


def _create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_CLAIM)
        schema_editor.execute(CLAIM)
        schema_editor.execute(SUCCEED)
        schema_editor.execute(SUCCEED_THEN_CLAIM)


def _drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        for statement in [*DROP, DROP_NEW_CLAIM]:
            schema_editor.execute(statement)
        schema_editor.execute(previous.CREATE)


class Migration(migrations.Migration):
    dependencies = [("runs", "0010_run_claim_by_key")]

    operations = [migrations.RunPython(_create, _drop)]
