"""docker-compose.yml, the Dockerfile and docs/operations.md agree with the code.

No Docker engine runs here: the compose file is read with PyYAML (merge keys and anchors included), its
``${VAR:-default}`` values are interpolated the way Compose does with an empty environment, and the resulting
app environment is fed to the real settings module in a subprocess.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from echoflow.env import database_from_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
SETTINGS_FILE = ROOT / "echoflow" / "settings.py"

SERVICES = {"postgres", "redis", "web", "worker", "beat", "flower"}
APP_SERVICES = ("web", "worker", "beat", "flower")
LONG_RUNNING = ("postgres", "redis", *APP_SERVICES)

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in {":?", "?"}:
            if (op == ":?" and not value) or value is None:
                raise AssertionError(f"compose requires {name}: {arg}")
            return value
        return value or ""

    return _VAR.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def app_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): interpolate(str(v)) for k, v in raw.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return [interpolate(str(part)) for part in command] if isinstance(command, list) else command.split()


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def settings_env_vars() -> set[str]:
    """The names echoflow/settings.py reads through the env helpers."""
    source = SETTINGS_FILE.read_text()
    names = set(re.findall(r"env_(?:str|bool|int|float|list)\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    assert "DATABASE_URL" in names and "REDIS_URL" in names, "the settings reader pattern no longer matches"
    return names


# --- the services ------------------------------------------------------------------------------------------------
def test_the_six_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= SERVICES


def test_the_shared_app_config_is_an_extension_anchor(compose: dict[str, Any]) -> None:
    assert any(key.startswith("x-") for key in compose)
    text = COMPOSE_FILE.read_text()
    assert re.search(r"^x-[\w-]+: &[\w-]+", text, re.MULTILINE)
    assert text.count("<<: *app") >= len(APP_SERVICES)


def test_every_app_service_has_the_same_environment(services: dict[str, dict[str, Any]]) -> None:
    envs = {name: app_env(services[name]) for name in (*APP_SERVICES, "migrate")}
    reference = envs["web"]
    assert reference["DATABASE_URL"] == "postgres://echoflow:echoflow@postgres:5432/echoflow"
    assert reference["REDIS_URL"] == "redis://redis:6379/0"
    assert reference["DEBUG"] == "0"
    assert reference["SECRET_KEY"], "SECRET_KEY needs a default or compose passes an empty one"
    assert "${SECRET_KEY" in COMPOSE_FILE.read_text(), "SECRET_KEY must be settable from the shell"
    assert reference["ALLOWED_HOSTS"]
    for name, env in envs.items():
        assert env == reference, f"{name} runs with other settings than web"


def test_database_url_matches_the_postgres_service(services: dict[str, dict[str, Any]]) -> None:
    db = database_from_url("DATABASE_URL", app_env(services["web"])["DATABASE_URL"], base_dir=ROOT)
    pg = services["postgres"]["environment"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["PORT"]) == ("postgres", "5432")
    assert (db["USER"], db["PASSWORD"], db["NAME"]) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"


def test_postgres_keeps_its_data_in_a_named_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    mounts = [str(v) for v in services["postgres"]["volumes"]]
    named = [m.split(":", 1)[0] for m in mounts if m.endswith(":/var/lib/postgresql/data")]
    assert named and named[0] in (compose.get("volumes") or {})


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgres", "redis", "web", "worker", "beat"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in healthcheck_text(services["postgres"])
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    assert "/healthz" in healthcheck_text(services["web"])
    worker = healthcheck_text(services["worker"])
    assert "inspect ping" in worker and "$$HOSTNAME" in worker
    assert "check_scheduler" in healthcheck_text(services["beat"])


def test_the_beat_healthcheck_command_exists() -> None:
    assert "check_scheduler" in get_commands()


def test_app_services_wait_for_healthy_postgres_redis_and_migrations(services: dict[str, dict[str, Any]]) -> None:
    for name in ("migrate", *APP_SERVICES):
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for backing in ("postgres", "redis"):
            assert depends[backing]["condition"] == "service_healthy", f"{name} does not wait for {backing}"
    for name in APP_SERVICES:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert command_of(services["migrate"]) == ["python", "manage.py", "migrate", "--noinput"]


def test_restart_policies(services: dict[str, dict[str, Any]]) -> None:
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "unless-stopped", name
    # A one-shot with unless-stopped would be started again after every successful exit.
    assert services["migrate"]["restart"] == "no"


def test_docker_waits_longer_than_the_workers_shutdown_grace(services: dict[str, dict[str, Any]]) -> None:
    # Docker kills the worker after stop_grace_period; the attempts must be recorded interrupted before that.
    grace = services["worker"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) >= settings.ECHOFLOW["SHUTDOWN_GRACE_SECONDS"] + 10


def test_web_serves_gunicorn_on_8000(services: dict[str, dict[str, Any]]) -> None:
    command = command_of(services["web"])
    assert command[:2] == ["gunicorn", "echoflow.wsgi:application"]
    assert command[command.index("--bind") + 1] == "0.0.0.0:8000"
    assert any(str(p).endswith("8000:8000") for p in services["web"]["ports"])
    # The healthcheck calls http://localhost:8000/healthz, which Django answers only for an allowed host.
    assert "localhost" in app_env(services["web"])["ALLOWED_HOSTS"].split(",")


def test_worker_listens_to_every_queue_the_settings_route_to(services: dict[str, dict[str, Any]]) -> None:
    from echoflow.system_tasks import SYSTEM_TASKS

    command = command_of(services["worker"])
    assert command[:4] == ["celery", "-A", "echoflow", "worker"]
    assert "-E" in command
    queues = set(command[command.index("-Q") + 1].split(","))
    routed = {settings.CELERY_TASK_DEFAULT_QUEUE} | {r["queue"] for r in settings.CELERY_TASK_ROUTES.values()}
    routed |= set(settings.RUN_QUEUES.values())
    assert routed == {"echoflow", "echoflow.system", "echoflow.high", "echoflow.low"}
    assert queues == routed
    # Listed in the order the worker must serve them: system ticks first, then runs by priority.
    assert command[command.index("-Q") + 1] == settings.WORKER_QUEUES
    # Beat's system tasks are routed (and installed) to echoflow.system, which the worker consumes.
    assert all(task.task.startswith("echoflow.system.") for task in SYSTEM_TASKS)


def test_beat_takes_its_scheduler_from_settings(services: dict[str, dict[str, Any]]) -> None:
    command = command_of(services["beat"])
    assert command[:4] == ["celery", "-A", "echoflow", "beat"]
    assert not {"-S", "--scheduler"} & set(command), "the scheduler class belongs in CELERY_BEAT_SCHEDULER"
    assert settings.CELERY_BEAT_SCHEDULER == "echoflow.beat:EchoFlowScheduler"


def test_flower_on_5555(services: dict[str, dict[str, Any]]) -> None:
    command = command_of(services["flower"])
    assert command[:4] == ["celery", "-A", "echoflow", "flower"]
    assert "--port=5555" in command
    assert any(interpolate(str(p)).endswith(":5555") for p in services["flower"]["ports"])


# --- the environment against the real settings -------------------------------------------------------------------
def test_every_compose_variable_is_one_the_settings_read(services: dict[str, dict[str, Any]]) -> None:
    unknown = set(app_env(services["web"])) - settings_env_vars()
    assert not unknown, f"docker-compose.yml sets variables echoflow/settings.py never reads: {sorted(unknown)}"


def test_the_settings_accept_the_compose_environment(services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    compose_env = app_env(services["web"])
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT"}}
    env.update(compose_env)
    # The same settings, but a SQLite file instead of the compose network's PostgreSQL host.
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'compose.sqlite3'}"
    env["ECHOFLOW_VAR_DIR"] = str(tmp_path / "var")
    env["DJANGO_SETTINGS_MODULE"] = "echoflow.settings"
    script = (
        "import json, django\n"
        "django.setup()\n"
        "from django.conf import settings as s\n"
        "from django.core.management import call_command\n"
        "call_command('check', fail_level='ERROR')\n"
        "print(json.dumps({'DEBUG': s.DEBUG, 'SECRET_KEY': s.SECRET_KEY, 'ALLOWED_HOSTS': s.ALLOWED_HOSTS,\n"
        "  'BROKER': s.CELERY_BROKER_URL, 'EVENTS': s.EVENTS_REDIS_URL, 'BEAT': s.CELERY_BEAT_SCHEDULER,\n"
        "  'CSRF': s.CSRF_TRUSTED_ORIGINS}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["DEBUG"] is False
    assert loaded["SECRET_KEY"] == compose_env["SECRET_KEY"]
    assert loaded["ALLOWED_HOSTS"] == compose_env["ALLOWED_HOSTS"].split(",")
    assert loaded["BROKER"] == loaded["EVENTS"] == "redis://redis:6379/0"
    assert loaded["BEAT"] == "echoflow.beat:EchoFlowScheduler"
    assert loaded["CSRF"] == []


def test_the_settings_refuse_a_missing_secret_key_in_production(tmp_path: Path) -> None:
    """Why compose passes SECRET_KEY at all: with DATABASE_URL set and DEBUG off, start-up stops without one."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL"}}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}",
        ECHOFLOW_VAR_DIR=str(tmp_path / "var"),
        DEBUG="0",
        DJANGO_SETTINGS_MODULE="echoflow.settings",
    )
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr


# --- the image ---------------------------------------------------------------------------------------------------
def test_the_dockerfile_installs_from_the_lock_file() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert "uv.lock" in text
    assert re.search(r"pip install [^\n]*uv", text)
    assert "uv sync --frozen --no-dev" in text
    assert "collectstatic" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"
    cmd = re.findall(r"^CMD\s+(.+)$", text, re.MULTILINE)[-1]
    assert json.loads(cmd)[:2] == ["gunicorn", "echoflow.wsgi:application"]


def test_the_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    needed = ["pyproject.toml", "uv.lock", "manage.py", "echoflow/settings.py", "runs/tasks.py", "schedules/models.py"]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns), path
    for secret_or_state in (".env", ".git", ".venv", "var"):
        assert secret_or_state in patterns


# --- the operations doc ------------------------------------------------------------------------------------------
def test_the_operations_doc_names_every_setting() -> None:
    doc = OPERATIONS_DOC.read_text()
    missing = sorted(name for name in settings_env_vars() if f"`{name}`" not in doc)
    assert not missing, f"docs/operations.md does not document {missing}"


def test_the_operations_doc_names_the_system_tasks_and_queues() -> None:
    from echoflow.system_tasks import SYSTEM_TASKS

    doc = OPERATIONS_DOC.read_text()
    for task in SYSTEM_TASKS:
        assert task.name in doc and task.task in doc
    for queue in ("`echoflow`", "`echoflow.system`", "check_scheduler", "/healthz", "docker compose up -d"):
        assert queue in doc
