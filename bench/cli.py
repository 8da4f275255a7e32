"""``python -m bench SCENARIO [--smoke]`` / ``manage.py bench SCENARIO``: run benchmarks, print Markdown tables.

Scenarios: dispatch (N schedules due in one second vs django-celery-beat), throughput (ad-hoc runs vs bare
Celery tasks), lag (every-minute cron: start/finish lag vs beat), memory (dispatcher RSS and cold start by N),
api (latency of the filtered list endpoints on 100k schedules and 1M runs), migrate (a worker's writes while
the runs.0009 migration runs on 1M runs), all. ``--smoke`` runs tiny sizes
in seconds (what CI runs; its times mean nothing).
Everything happens in a database and a redis-server created for the run and removed at its end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from bench.common import PYTHON, ROOT, bench_environment
from bench.cpu import ProcessCpu, percent

SCENARIOS = ("dispatch", "throughput", "lag", "memory", "api", "migrate")


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
    )


def scenario_options(name: str, options: argparse.Namespace) -> dict[str, Any]:
    smoke = options.smoke
    if name == "dispatch":
        return {
            "count": options.count or (200 if smoke else 10_000),
            "dispatchers": options.dispatchers,
            "senders": options.sender or ["plain"],
            "limit": 30.0 if smoke else 120.0,
            "peer_limit": 10.0 if smoke else options.peer_limit,
        }
    if name == "throughput":
        return {
            "count": options.count or (200 if smoke else 20_000),
            "concurrency": options.concurrency,
            "pools": options.pool or ["prefork", "threads"],
            "limit": 60.0 if smoke else 900.0,
        }
    if name == "lag":
        return {
            "count": options.count or (20 if smoke else 1000),
            "slots": 2 if smoke else 3,
            "period": 5 if smoke else 60,
            "limit": 20.0 if smoke else 120.0,
            "concurrency": options.concurrency,
            "floor": not options.no_floor,
        }
    if name == "memory":
        sizes = [1000, 5000] if smoke else [1000, 100_000, 1_000_000]
        return {
            "sizes": sizes,
            "pools": options.system_pool or (["threads"] if smoke else ["prefork", "threads"]),
            "beats": options.beat or ["apart", "embedded"],
            "idle": 3.0 if smoke else 15.0,
            "peer_max": options.peer_max or (1000 if smoke else sizes[-1]),
            "peer_limit": 30.0 if smoke else 180.0,
        }
    if name == "api":
        runs = options.count or (5_000 if smoke else 1_000_000)
        return {
            "runs": runs,
            "schedules": max(runs // 10, 100),
            "requests": options.requests or (5 if smoke else 200),
            "warmup": 1 if smoke else 20,
        }
    if name == "migrate":
        return {"runs": options.count or (5_000 if smoke else 1_000_000)}
    raise ValueError(name)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", choices=[*SCENARIOS, "all"])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; for CI (times mean nothing)")
    p.add_argument(
        "--count", type=int, default=0, help="N (default: the scenario's size from the issue); api, migrate: runs"
    )
    p.add_argument("--dispatchers", type=int, default=2, help="dispatch: dispatcher processes")
    p.add_argument(
        "--sender",
        action="append",
        choices=["plain", "pipelined"],
        help="dispatch: how runs are sent (runs.dispatcher.send_runs, or bench.fast_send); repeatable",
    )
    p.add_argument("--peer-limit", type=float, default=120.0, help="dispatch: seconds beat gets to send N")
    p.add_argument("--concurrency", type=int, default=2, help="throughput, lag: run worker concurrency")
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="lag: leave out Celery alone with the messages pushed at the slot (the floor under any scheduler)",
    )
    p.add_argument("--pool", action="append", choices=["prefork", "threads"], help="throughput: pools; repeatable")
    p.add_argument(
        "--system-pool", action="append", choices=["prefork", "threads"], help="memory: system worker pools; repeatable"
    )
    p.add_argument(
        "--beat",
        action="append",
        choices=["apart", "embedded"],
        help="memory: beat as its own process, or inside the system worker (-B); repeatable",
    )
    p.add_argument("--peer-max", type=int, default=0, help="memory: largest N given to beat (default: all sizes)")
    p.add_argument("--requests", type=int, default=0, help="api: timed requests per case (default 200)")
    p.add_argument("--postgres", default=None, help="PostgreSQL server URL (default: the server of DATABASE_URL)")


def run(options: argparse.Namespace) -> int:
    names = SCENARIOS if options.scenario == "all" else (options.scenario,)
    print(f"# machine: {_machine()}", flush=True)
    failed = 0
    host = ProcessCpu(lambda command: None)
    with bench_environment(postgres=options.postgres) as env:
        for name in names:
            config = json.dumps(scenario_options(name, options))
            print(f"# scenario {name}: {config}", flush=True)
            before = host.snapshot()
            done = subprocess.run([PYTHON, "-m", "bench.runner", name, config], cwd=ROOT, env=env, check=False)
            use = host.between(before, host.snapshot())
            # On a shared virtual machine the hypervisor may take a large share of the time: figures of a scenario
            # with much of it stolen are not comparable with one without.
            print(
                f"# scenario {name}: the machine's CPU time was {percent(use.busy)} busy and {percent(use.stolen)} "
                "stolen by the hypervisor (from /proc/stat)",
                flush=True,
            )
            if done.returncode:
                print(f"# scenario {name} failed with exit status {done.returncode}", file=sys.stderr, flush=True)
                failed += 1
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv))
