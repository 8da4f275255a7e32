from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "echoflow.observability"
    label = "observability"
    verbose_name = "Observability: metrics, alerts and webhooks"
