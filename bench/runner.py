"""The child process of ``python -m bench``: Django set up on the benchmark's own database and Redis."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("options", help="JSON of the scenario's options")
    args = parser.parse_args()
    options = json.loads(args.options)
    django.setup()
    workdir = Path(tempfile.mkdtemp(prefix=f"echoflow-bench-{args.scenario}-"))
    print(f"# logs of child processes: {workdir}", flush=True)
    if args.scenario == "dispatch":
        from bench import dispatch

        dispatch.run(workdir=workdir, **options)
    elif args.scenario == "throughput":
        from bench import throughput

        throughput.run(workdir=workdir, **options)
    elif args.scenario in ("lag", "memory", "migrate"):
        import importlib

        importlib.import_module(f"bench.{args.scenario}").run(workdir=workdir, **options)
    elif args.scenario == "api":
        from bench import api

        api.run(workdir=workdir, **options)
    else:
        sys.exit(f"unknown scenario {args.scenario!r}")


if __name__ == "__main__":
    main()
