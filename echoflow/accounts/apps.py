from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "echoflow.accounts"
    label = "accounts"
    verbose_name = "Organizations"
