from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "echoflow.events"
    label = "events"
    verbose_name = "Event bus"
