"""The dispatcher's bookkeeping of messages: lost ones are re-sent, with growing patience."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from echoflow.accounts.models import Organization
from runs.dispatcher import dispatch_tick
from runs.models import Run
from runs.services import schedule_run_now
from schedules.services import schedule_create

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_a_lost_message_is_sent_again_with_doubling_patience(org: Organization, settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "RESEND_AFTER_SECONDS": 60}
    schedule = schedule_create(
        organization=org,
        data={"name": "s", "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"},
        now=T0,
    )
    run, _ = schedule_run_now(schedule=schedule, now=T0)
    sent: list[int] = []

    def tick(at: datetime) -> list[int]:
        sent.clear()
        dispatch_tick(now=at, sender=lambda rows: sent.extend(pk for pk, _ in rows))
        return list(sent)

    assert tick(T0) == [run.pk]  # first send
    assert tick(T0 + timedelta(seconds=59)) == []  # still plausibly in flight
    assert tick(T0 + timedelta(seconds=60)) == [run.pk]  # lost: sent again
    assert tick(T0 + timedelta(seconds=60 + 119)) == []  # now waits twice as long
    assert tick(T0 + timedelta(seconds=60 + 120)) == [run.pk]
    assert tick(T0 + timedelta(seconds=180 + 239)) == []
    run.refresh_from_db()
    assert run.sends == 3


def test_a_failed_send_is_retried_on_the_next_tick(org: Organization) -> None:
    schedule = schedule_create(
        organization=org,
        data={"name": "s", "trigger_kind": "cron", "cron": "0 0 1 1 *", "action_name": "echoflow.noop"},
        now=T0,
    )
    run, _ = schedule_run_now(schedule=schedule, now=T0)

    def broker_down(rows: list[tuple[int, int]]) -> None:
        raise ConnectionError("broker unreachable")

    assert dispatch_tick(now=T0, sender=broker_down).enqueued == 0
    run.refresh_from_db()
    assert (run.enqueued_at, run.sends) == (None, 0)
    sent: list[tuple[int, int]] = []
    assert dispatch_tick(now=T0 + timedelta(seconds=1), sender=sent.extend).enqueued == 1
    assert [pk for pk, _ in sent] == [run.pk]
    assert Run.objects.get(pk=run.pk).sends == 1


def test_a_large_slot_is_sent_first_in_a_small_batch_then_in_full_ones(org: Organization, settings: Any) -> None:
    """The first batch of a tick is DISPATCH_FIRST_BATCH_SIZE schedules: its runs are committed and sent before the
    rest is planned, so workers start on a burst at once. A full batch is a part of a burst whose rest follows, and
    goes out in full messages (runs.sending.more_follows); the last, partial one is spread as any burst."""
    from runs import sending

    settings.ECHOFLOW = {
        **settings.ECHOFLOW,
        "DISPATCH_FIRST_BATCH_SIZE": 3,
        "DISPATCH_BATCH_SIZE": 5,
        "RUN_BATCH_MAX": 16,
        "RUN_BATCH_SPREAD": 64,
    }
    data = {"trigger_kind": "cron", "cron": "*/5 * * * *", "action_name": "echoflow.noop"}
    for i in range(12):
        schedule_create(organization=org, data={**data, "name": f"s{i:02d}"}, now=T0 - timedelta(minutes=1))
    sends: list[tuple[list[int], list[int], int]] = []

    def sender(rows: list[tuple[int, int]]) -> None:
        # What was sent, the sizes of the messages that would carry it (one queue: every run has priority 5), and
        # how many runs were committed by then.
        (messages,) = sending.runs_messages(rows).values()
        sends.append(([pk for pk, _ in rows], [len(ids) for ids in messages], Run.objects.count()))

    result = dispatch_tick(now=T0, sender=sender)
    assert (result.schedules, result.created, result.enqueued) == (12, 12, 12)
    # The full batches go out whole (the rest of the burst follows); the last, partial one is spread (RUN_BATCH_SPREAD
    # is 64: fewer than twice that many runs go one per message).
    assert [(len(pks), sizes, written) for pks, sizes, written in sends] == [
        (3, [3], 3),
        (5, [5], 8),
        (4, [1, 1, 1, 1], 12),
    ]
    assert sorted(pk for pks, _, _ in sends for pk in pks) == sorted(Run.objects.values_list("pk", flat=True))
    # Outside the tick, a send is spread again.
    assert [len(ids) for ids in sending.runs_messages([(1, 5), (2, 5)])["echoflow"]] == [1, 1]


def test_the_first_batch_is_never_larger_than_a_batch(org: Organization, settings: Any) -> None:
    settings.ECHOFLOW = {**settings.ECHOFLOW, "DISPATCH_FIRST_BATCH_SIZE": 256, "DISPATCH_BATCH_SIZE": 2}
    data = {"trigger_kind": "cron", "cron": "*/5 * * * *", "action_name": "echoflow.noop"}
    for i in range(5):
        schedule_create(organization=org, data={**data, "name": f"s{i}"}, now=T0 - timedelta(minutes=1))
    sizes: list[int] = []
    dispatch_tick(now=T0, sender=lambda rows: sizes.append(len(rows)))
    assert sizes == [2, 2, 1]
