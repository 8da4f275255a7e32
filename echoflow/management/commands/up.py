"""``manage.py up``: the embedded all-in-one.

Migrates, creates a demo organization, an admin user (password printed once) and a demo schedule, then runs web
(gunicorn), a worker, beat and Flower as child processes. Ctrl-C (or SIGTERM) stops them all; if one of them
dies, the others are stopped too and the command exits non-zero.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from echoflow.accounts.models import Role
from echoflow.accounts.services import membership_set, organization_get_or_create
from echoflow.system_tasks import system_tasks_install
from schedules.models import Schedule
from schedules.services import schedule_create

DEMO_SCHEDULE = "demo: echo every 10 seconds"


class Command(BaseCommand):
    help = "Set up the embedded default and run web, worker, beat and Flower together (Ctrl-C stops them)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--flower-port", type=int, default=5555)
        parser.add_argument("--no-flower", action="store_true", help="Do not start Flower.")
        parser.add_argument("--concurrency", type=int, default=2, help="Worker processes.")
        parser.add_argument("--setup-only", action="store_true", help="Prepare everything, start nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        self._setup()
        if options["setup_only"]:
            return
        self._run_children(options)

    # -- setup -----------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        system_tasks_install()
        org = organization_get_or_create(name="Demo", slug="demo")
        user_model = get_user_model()
        admin = user_model.objects.filter(username="admin").first()
        if admin is None:
            password = secrets.token_urlsafe(12)
            admin = user_model.objects.create_superuser("admin", "admin@example.com", password)
            self.stdout.write(self.style.SUCCESS(f"Created the admin user: admin / {password}  (shown only once)"))
        else:
            self.stdout.write("Admin user: admin (reset its password with: python manage.py changepassword admin)")
        membership_set(organization=org, user=admin, role=Role.ADMIN)
        if not Schedule.objects.filter(organization=org, name=DEMO_SCHEDULE).exists():
            schedule_create(
                organization=org,
                data={
                    "name": DEMO_SCHEDULE,
                    "description": "Created by `manage.py up`: echoes its payload every 10 seconds.",
                    "agent": "demo",
                    "trigger_kind": "interval",
                    "interval_seconds": 10,
                    "action_kind": "python",
                    "action_name": "echoflow.echo",
                    "payload": {"hello": "from EchoFlow"},
                    "max_attempts": 3,
                },
            )
            self.stdout.write(f"Created the demo schedule {DEMO_SCHEDULE!r}")

    # -- processes -------------------------------------------------------------------------------------------------
    def _commands(self, options: dict[str, Any]) -> dict[str, list[str]]:
        py = sys.executable
        celery = [py, "-m", "celery", "-A", "echoflow"]
        commands = {
            "web": [
                py,
                "-m",
                "gunicorn",
                "echoflow.wsgi:application",
                "--bind",
                f"{options['host']}:{options['port']}",
                "--workers",
                "2",
                "--access-logfile",
                "-",
            ],
            "worker": [
                *celery,
                "worker",
                "-Q",
                settings.WORKER_QUEUES,
                "-l",
                "info",
                "-E",
                "--concurrency",
                str(options["concurrency"]),
                "-n",
                "echoflow@%h",
            ],
            "beat": [
                *celery,
                "beat",
                "-l",
                "info",
                "--pidfile=",
                "-s",
                str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        }
        if not options["no_flower"]:
            commands["flower"] = [
                *celery,
                "flower",
                f"--port={options['flower_port']}",
                f"--address={options['host']}",
            ]
        return commands

    def _run_children(self, options: dict[str, Any]) -> None:
        env = os.environ.copy()
        children: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for name, command in self._commands(options).items():
            children[name] = subprocess.Popen(command, env=env, start_new_session=True)
        url = f"http://{options['host']}:{options['port']}"
        self.stdout.write(self.style.SUCCESS(f"EchoFlow is up: admin {url}/admin/  health {url}/healthz"))
        if "flower" in children:
            self.stdout.write(self.style.SUCCESS(f"Flower: http://{options['host']}:{options['flower_port']}/"))
        self.stdout.write("Press Ctrl-C to stop.")
        failed = ""
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    failed = f"{name} exited with status {child.returncode}"
                    stopping = True
                    break
            time.sleep(0.5)
        self.stdout.write("Stopping web, worker, beat and Flower…")
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in children.values():
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if failed:
            self.stderr.write(f"stopped because {failed}")
            sys.exit(1)
        self.stdout.write("Stopped.")
