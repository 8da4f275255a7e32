"""The peer: django-celery-beat's DatabaseScheduler driven the way ``celery beat`` drives it.

Loads the PeriodicTask rows (``setup_schedule``, as at beat's start), then travels the process clock so that the
crontab's due minute ``--due`` (the rows' last_run_at is just before it) arrives ``--lead`` real seconds after
loading, and runs the loop of ``celery.beat.Service.start``: ``interval = scheduler.tick()``, sleep ``interval``
when positive. Prints the real epoch of the slot first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lead", type=float, default=2.0, help="seconds from 'loaded' to the slot")
    parser.add_argument("--due", type=float, required=True, help="epoch of the (fake) minute the crontab is due")
    parser.add_argument("--until", type=float, required=True, help="epoch seconds: stop after this")
    options = parser.parse_args()
    django.setup()
    import time_machine
    from django_celery_beat.schedulers import DatabaseScheduler

    from echoflow.celery import app

    loading = time.time()
    scheduler = DatabaseScheduler(app=app, lazy=False)
    loaded = time.time()
    slot_real = loaded + options.lead
    offset = options.due - slot_real
    print(json.dumps({"slot": slot_real, "load_s": loaded - loading}), flush=True)
    with time_machine.travel(datetime.fromtimestamp(time.time() + offset, tz=UTC), tick=True):
        while time.time() - offset < options.until:
            interval = scheduler.tick()
            if interval and interval > 0:
                time.sleep(min(interval, max(0.0, options.until - (time.time() - offset))))
    scheduler.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
