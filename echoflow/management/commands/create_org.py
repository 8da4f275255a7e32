"""`manage.py create_org <name> [--slug SLUG]`: an organization (idempotent: an existing slug is left as it is)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import slugify

from echoflow.accounts.models import Organization
from echoflow.accounts.services import ORG_NAME_MAX, organization_get_or_create
from echoflow.audit.context import acting_as, command_actor


class Command(BaseCommand):
    help = "Create an organization (the tenant that owns schedules, runs, members and tokens)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Its display name, e.g. 'Acme Corp'.")
        parser.add_argument("--slug", help="Its short handle in URLs and the API (default: from the name).")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"].strip()
        if not name or len(name) > ORG_NAME_MAX:
            raise CommandError(f"name: must be 1 to {ORG_NAME_MAX} characters")
        slug: str = options["slug"] or slugify(name)
        if not slug or slugify(slug) != slug:
            raise CommandError(f"slug: {slug!r} must be lower-case letters, digits and hyphens")
        existed = Organization.objects.filter(slug=slug).exists()
        with acting_as(command_actor("create_org")):
            org = organization_get_or_create(name=name, slug=slug)
        if existed:
            self.stdout.write(f"Organization {org.slug!r} already exists (id {org.pk}, name {org.name!r}).")
        else:
            self.stdout.write(f"Created organization {org.slug!r} (id {org.pk}).")
