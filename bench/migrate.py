"""Scenario migrate — what a worker's writes see while ``runs.0009_run_agent`` runs on a large history.

N runs (and N/10 schedules, most with an agent) are generated as for scenario 5; the runs app is migrated back to
0008 (no ``agent`` column). Then the same schema change is made twice, each time while a thread stands in for the
workers, updating one random run every 20 ms on its own connection (as a claim or a finish does) and timing each
update:

1. *one transaction*: what Django's ``AddField``, ``RunPython`` and ``AddIndex`` do by default (and 0009 did until
   it was rewritten): add the column, copy every agent in one ``UPDATE``, ``CREATE INDEX``, commit;
2. *EchoFlow's 0009*: ``manage.py migrate runs 0009`` as it is now: the column in one short statement, the copy in
   autocommitted batches of 5,000 run ids, the index ``CREATE INDEX CONCURRENTLY`` (echoflow/migration_ops.py).

Between the two the column (and its index) is dropped and the table vacuumed. Printed: the time the change took,
the writes made meanwhile and their p50 / p99 / longest wait.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction

from bench.api_data import api_data_generate
from bench.common import percentile, print_table
from bench.data import truncate

WRITE_EVERY = 0.02

ONE_TRANSACTION = [
    "ALTER TABLE runs_run ADD COLUMN agent varchar(100) DEFAULT '' NOT NULL",
    "UPDATE runs_run AS r SET agent = s.agent FROM schedules_schedule AS s "
    "WHERE s.id = r.schedule_id AND s.agent <> ''",
    "CREATE INDEX run_org_agent_created_idx ON runs_run (organization_id, agent, created_at DESC) WHERE NOT agent = ''",
]


@dataclass
class Writes:
    waits: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(self.waits, q) * 1000 if self.waits else float("nan")


def _while_writing(change: Callable[[], None], id_range: tuple[int, int]) -> tuple[float, Writes]:
    db = connection.settings_dict
    writes = Writes()
    stop = threading.Event()
    ready = threading.Event()

    def writer() -> None:
        rng = random.Random(7)
        with psycopg.connect(
            host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
        ) as conn:
            ready.set()
            while not stop.is_set():
                started = time.monotonic()
                conn.execute("UPDATE runs_run SET heartbeat_at = now() WHERE id = %s", [rng.randint(*id_range)])
                writes.waits.append(time.monotonic() - started)
                time.sleep(WRITE_EVERY)

    thread = threading.Thread(target=writer, name="bench-writer")
    thread.start()
    ready.wait(30)
    started = time.monotonic()
    try:
        change()
    finally:
        took = time.monotonic() - started
        stop.set()
        thread.join()
    return took, writes


def _one_transaction() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in ONE_TRANSACTION:
            cursor.execute(statement)


def _echoflow() -> None:
    call_command("migrate", "runs", "0009", verbosity=0)


def _reset() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE runs_run DROP COLUMN IF EXISTS agent")  # and its index
        cursor.execute("VACUUM ANALYZE runs_run")
        cursor.execute("SELECT min(id), max(id) FROM runs_run")
        low, high = cursor.fetchone()
    return int(low), int(high)


def _with_agent() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs_run WHERE agent <> ''")
        return int(cursor.fetchone()[0])


def run(*, runs: int, workdir: object = None) -> None:
    # `bench all` runs this after scenario 5, on the same database: start from the same empty tables as it did.
    truncate(["runs_runattempt", "runs_run", "schedules_schedule", "events_outboxevent"])
    get_user_model().objects.filter(username="bench-api").delete()
    api_data_generate(schedules=max(runs // 10, 100), runs=runs)
    call_command("migrate", "runs", "0008", verbosity=0)
    rows = []
    for label, change in (
        ("one transaction (Django's default: AddField, RunPython, AddIndex)", _one_transaction),
        ("EchoFlow's runs.0009 (batched copy, CREATE INDEX CONCURRENTLY)", _echoflow),
    ):
        id_range = _reset()
        took, writes = _while_writing(change, id_range)
        rows.append([label, runs, _with_agent(), took, len(writes.waits), writes.p(50), writes.p(99), writes.p(100)])
    print_table(
        f"migrate: runs.0009 on {runs:,} runs while a worker writes a run every {WRITE_EVERY * 1000:.0f} ms",
        ["change", "runs", "runs given an agent", "took s", "writes meanwhile", "write p50 ms", "write p99 ms",
         "longest write ms"],
        rows,
    )  # fmt: skip
