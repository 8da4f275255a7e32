"""`manage.py create_user <username> [--org SLUG --role ROLE] [--email E] [--password P] [--superuser]`.

Creates the user if needed and, with --org, makes them a member with a role (or changes their role).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from echoflow.accounts.models import Organization, Role
from echoflow.accounts.services import membership_set, user_get_or_create
from echoflow.audit.context import acting_as, command_actor


class Command(BaseCommand):
    help = "Create a user and, with --org, make them a member of an organization with a role."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="Their password for the web page (default: none, API tokens only).")
        parser.add_argument("--org", metavar="SLUG", help="Make them a member of this organization.")
        parser.add_argument("--role", choices=Role.values, default=Role.VIEWER, help="Their role there (viewer).")
        parser.add_argument("--superuser", action="store_true", help="Also a Django superuser (the admin site).")

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"].strip()
        max_length = get_user_model()._meta.get_field("username").max_length or 150
        if not username or len(username) > max_length:
            raise CommandError(f"username: must be 1 to {max_length} characters")
        org = None
        if options["org"]:
            org = Organization.objects.filter(slug=options["org"]).first()
            if org is None:
                raise CommandError(f"org: no organization with the slug {options['org']!r}")
        with acting_as(command_actor("create_user")), transaction.atomic():
            user, created = user_get_or_create(username=username, email=options["email"])
            if options["password"]:
                user.set_password(options["password"])
            elif created:
                user.set_unusable_password()
            if options["superuser"]:
                user.is_staff = user.is_superuser = True  # type: ignore[attr-defined]
            user.save()
            if org is not None:
                try:
                    membership_set(organization=org, user=user, role=options["role"])
                except ValidationError as exc:
                    raise CommandError("; ".join(f"{k}: {v[0]}" for k, v in exc.message_dict.items())) from None
        self.stdout.write(f"{'Created' if created else 'Updated'} user {username!r} (id {user.pk}).")
        if org is not None:
            self.stdout.write(f"{username!r} is {options['role']} in {org.slug!r}.")
