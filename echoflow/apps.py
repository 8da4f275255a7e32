from django.apps import AppConfig


class EchoflowConfig(AppConfig):
    name = "echoflow"
    verbose_name = "EchoFlow"
