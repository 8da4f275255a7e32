"""The executor's claim of a queued run as one PostgreSQL function, ``echoflow_run_claim``.

It does what ``runs.attempt_writes`` did in two statements in the caller's transaction, but in one call: called
outside a transaction it is begun, locked, admitted, written and committed in a single round trip, and the locks
of the run, its schedule and its organization are held only while the server runs it (docs/benchmarks.md §4).

Inside it the two steps stay two statements: a PL/pgSQL function that is VOLATILE takes a new snapshot for each
statement under READ COMMITTED, so the admission checks of the second see every claim committed while the first
waited for its locks. Statuses and policies are written as their stored values; ``tests/test_attempt_writes.py``
checks that this path writes exactly what the ORM path writes.

Later changes to the claim replace the function in a new migration (CREATE OR REPLACE); SQLite has no function
and takes the ORM path.
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION echoflow_run_claim(
    p_run_id bigint, p_worker text, p_now timestamptz, p_occurred_at timestamptz
)
RETURNS TABLE (
    id bigint, status varchar, attempts integer, organization_id bigint, schedule_id bigint, "trigger" varchar,
    slot timestamptz, due_at timestamptz, started_at timestamptz, priority smallint, max_attempts integer,
    backoff_seconds jsonb, timeout_seconds integer, action_kind varchar, action_name varchar,
    action_config jsonb, payload jsonb, trace_id varchar, signing_secret varchar, started boolean
)
LANGUAGE plpgsql VOLATILE
AS $fn$
#variable_conflict use_column
DECLARE
    locked record;
    claimed_count bigint := 0;
BEGIN
    -- 1. The run, its schedule and its organization, locked together. The schedule's row is locked in a lateral
    --    subquery (a locking clause cannot name the nullable side of an outer join). FOR NO KEY UPDATE does not
    --    collide with the key-share locks that inserting runs takes: the dispatcher's inserts never wait.
    SELECT r.id, r.status, r.attempts, r.organization_id, r.schedule_id, r.trigger, r.slot, r.due_at,
           r.started_at, r.priority, r.max_attempts, r.backoff_seconds, r.timeout_seconds, r.action_kind,
           r.action_name, r.action_config, r.payload, r.trace_id, o.signing_secret
    INTO locked
    FROM runs_run AS r
    JOIN accounts_organization AS o ON o.id = r.organization_id
    LEFT JOIN LATERAL (
        SELECT s0.id FROM schedules_schedule AS s0 WHERE s0.id = r.schedule_id FOR NO KEY UPDATE
    ) AS s ON true
    WHERE r.id = p_run_id
    FOR UPDATE OF r FOR NO KEY UPDATE OF o;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    -- 2. A new snapshot, taken after the locks were granted: start the run only if its schedule's overlap policy
    --    admits it without a decision (it allows overlap, or fewer than max_concurrency of its runs run and, when
    --    buffered, no older run of it waits or is queued), its organization is under its limit and no run waits
    --    ahead of it; with the run.started event and the attempt row. Anything else (skip, wait, cancel the
    --    oldest) is admission_check's to decide, on the ORM path.
    IF locked.status = 'queued' THEN
        WITH claimed AS (
            UPDATE runs_run AS r
            SET status = 'running', attempts = r.attempts + 1, worker = p_worker, heartbeat_at = p_now,
                next_attempt_at = NULL, report_by = NULL, started_at = COALESCE(r.started_at, p_now)
            FROM accounts_organization AS o
            WHERE r.id = p_run_id AND o.id = r.organization_id AND r.status = 'queued'
              AND (r.schedule_id IS NULL OR EXISTS (
                  SELECT 1 FROM schedules_schedule AS s
                  WHERE s.id = r.schedule_id AND (
                      s.overlap_policy = 'allow_all'
                      OR (
                          (SELECT count(*) FROM runs_run AS x WHERE x.schedule_id = s.id AND x.status = 'running')
                              < s.max_concurrency
                          AND (s.overlap_policy NOT IN ('buffer_one', 'buffer_all') OR NOT EXISTS (
                              SELECT 1 FROM runs_run AS x
                              WHERE x.schedule_id = s.id AND x.status IN ('waiting', 'queued')
                                AND (x.priority > r.priority OR (x.priority = r.priority AND x.id < r.id))
                          ))
                      )
                  )
              ))
              AND (SELECT count(*) FROM runs_run AS x WHERE x.organization_id = r.organization_id
                   AND x.status = 'running') < o.max_concurrent_runs
              AND NOT EXISTS (
                  SELECT 1 FROM runs_run AS x
                  WHERE x.organization_id = r.organization_id AND x.status = 'waiting'
                    AND x.waiting_for = 'organization'
                    AND (x.priority > r.priority OR (x.priority = r.priority AND x.id < r.id))
              )
            RETURNING r.id, r.organization_id, r.schedule_id, r.attempts, r.slot, r.due_at, r.trigger
        ),
        event AS (
            INSERT INTO events_outboxevent
                (event_id, type, occurred_at, organization_id, schedule_id, run_id, attempt, data, stream_id)
            SELECT gen_random_uuid(), 'run.started', p_occurred_at, c.organization_id, c.schedule_id, c.id,
                   c.attempts,
                   jsonb_build_object(
                       'status', 'running'::text,
                       'worker', p_worker,
                       'slot', CASE WHEN c.slot IS NULL THEN NULL ELSE
                           to_char(c.slot AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                           || CASE WHEN mod(extract(microsecond FROM c.slot)::bigint, 1000000) = 0 THEN ''
                              ELSE to_char(c.slot AT TIME ZONE 'UTC', '.US') END || '+00:00' END,
                       'lag_ms', trunc(extract(epoch FROM p_now - coalesce(c.slot, c.due_at)) * 1000)::bigint,
                       'trigger', c.trigger
                   ),
                   ''
            FROM claimed AS c
        ),
        attempt AS (
            INSERT INTO runs_runattempt
                (run_id, number, started_at, finished_at, outcome, error, output, worker, duration_ms)
            SELECT c.id, c.attempts, p_now, NULL, 'running', '', NULL, p_worker, NULL FROM claimed AS c
        )
        SELECT count(*) INTO claimed_count FROM claimed;
    END IF;

    -- The run as it was before step 2, and whether step 2 started it.
    RETURN QUERY SELECT locked.id, locked.status, locked.attempts, locked.organization_id, locked.schedule_id,
        locked.trigger, locked.slot, locked.due_at, locked.started_at, locked.priority, locked.max_attempts,
        locked.backoff_seconds, locked.timeout_seconds, locked.action_kind, locked.action_name,
        locked.action_config, locked.payload, locked.trace_id, locked.signing_secret, claimed_count > 0;
END
$fn$
"""

DROP = "DROP FUNCTION IF EXISTS echoflow_run_claim(bigint, text, timestamptz, timestamptz)"


def _create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def _drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_apitoken"),
        ("events", "0001_initial"),
        ("runs", "0007_run_schedule_active_idx"),
        ("schedules", "0002_schedule_list_indexes"),
    ]

    operations = [migrations.RunPython(_create, _drop)]
