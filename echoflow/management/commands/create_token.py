"""`manage.py create_token --user U --org SLUG --name NAME [--scopes schedules:read,schedules:run]`.

Prints the token alone on stdout (so `TOKEN=$(manage.py create_token …)` works); it is shown this once.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from echoflow.accounts.models import ALL_PERMISSIONS, Organization
from echoflow.accounts.services import token_create
from echoflow.audit.context import acting_as, command_actor


class Command(BaseCommand):
    help = (
        "Create an API token for a member of an organization and print it (only its hash is stored: it cannot "
        "be shown again)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, metavar="USERNAME")
        parser.add_argument("--org", required=True, metavar="SLUG")
        parser.add_argument("--name", required=True, help="What the token is for, e.g. ci-deploy.")
        parser.add_argument(
            "--scopes",
            default="",
            help=f"Comma-separated permissions it may use ({', '.join(sorted(ALL_PERMISSIONS))}); default: all of "
            "the user's role.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"user: there is no user named {options['user']!r}")
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"org: no organization with the slug {options['org']!r}")
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            with acting_as(command_actor("create_token")):
                token, plaintext = token_create(user=user, organization=org, name=options["name"], scopes=scopes)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {v[0]}" for k, v in exc.message_dict.items())) from None
        self.stderr.write(
            f"Token {token.name!r} ({token.prefix}) for {user.get_username()!r} in {org.slug!r}, scopes: "
            f"{', '.join(token.scopes) or 'all of the role'}. Store it now; it is not shown again."
        )
        self.stdout.write(plaintext)
