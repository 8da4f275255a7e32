"""The beat scheduler: django-celery-beat's DatabaseScheduler, with EchoFlow's system tasks installed first."""

from __future__ import annotations

from typing import Any

from django_celery_beat.schedulers import DatabaseScheduler


class EchoFlowScheduler(DatabaseScheduler):
    # Re-read the PeriodicTask table often enough that the 1-second dispatch entry keeps its pace.
    max_interval = 1

    def setup_schedule(self) -> None:
        from echoflow.system_tasks import system_tasks_install

        system_tasks_install()
        super().setup_schedule()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
