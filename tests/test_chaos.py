"""The chaos test, short: kill -9 EchoFlow processes at random and take Redis and PostgreSQL away, then prove
from the database and the stream that nothing was lost or duplicated (the full run is in docs/reliability.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import child_env

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _figures(output: str) -> dict[str, str]:
    figures = {}
    for line in output.splitlines():
        label, _, value = line.rpartition(" ")
        if label.strip() and value and not line.startswith(("chaos:", " ")):
            figures[label.strip()] = value
    return figures


@pytest.mark.timeout(900)  # 45 s of chaos, then up to 300 s to settle on a busy machine
@pytest.mark.django_db(transaction=True)
def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    env = child_env(tmp_path, with_redis=False)  # the chaos command runs a Redis of its own
    command = [sys.executable, "manage.py", "chaos", "--schedules", "30", "--duration", "45", "--kill-every", "5"]
    command += ["--outage", "8", "--settle", "300", "--seed", "11"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    print(output)  # the figures, in the test log
    assert done.returncode == 0, output
    figures = _figures(done.stdout)
    assert int(figures["processes killed"]) >= 3
    assert int(figures["runs"]) > 0
    for name in ("duplicates", "missing (unexplained)", "stuck", "attempts unaccounted", "events missing"):
        assert figures[name] == "0", (name, output)
    assert figures["quiescent after (s)"] != "no"
    assert "no violations" in done.stdout
