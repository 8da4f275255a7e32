"""A dispatcher process for the benchmarks: ``dispatch_tick`` every ``--interval`` seconds at a fixed phase.

Stands in for a worker consuming beat's ``echoflow.system.dispatch`` message every second (the message plumbing
is left out so that both dispatchers tick at known instants). ``--sender pipelined`` uses bench.fast_send.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--until", type=float, required=True, help="epoch seconds: stop after this")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--phase", type=float, default=0.0, help="seconds after each whole interval to tick at")
    parser.add_argument("--sender", choices=["plain", "pipelined"], default="plain")
    parser.add_argument("--ready", default="", help="a file to create once set up (after a first tick)")
    options = parser.parse_args()
    django.setup()
    from runs.dispatcher import Sender, dispatch_tick, send_runs

    sender: Sender = send_runs
    if options.sender == "pipelined":
        from bench.fast_send import send_runs_pipelined

        sender = send_runs_pipelined
    dispatch_tick(sender=sender)  # connects to PostgreSQL and Redis, as a running dispatcher already has
    if options.ready:
        Path(options.ready).touch()
    while time.time() < options.until:
        now = time.time()
        tick_at = math.floor(now / options.interval) * options.interval + options.phase
        while tick_at <= now:
            tick_at += options.interval
        time.sleep(tick_at - now)
        dispatch_tick(sender=sender)


if __name__ == "__main__":
    main()
