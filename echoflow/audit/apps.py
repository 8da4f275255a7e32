from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "echoflow.audit"
    label = "audit"
    verbose_name = "Audit log"
