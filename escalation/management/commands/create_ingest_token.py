from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from escalation.choices import Scope, SourceKind
from escalation.services.sources import source_create
from portal.audit import Actor
from portal.errors import PortalError


class Command(BaseCommand):
    help = "Create an ingestion source and print its token (alone, on the last line). The token is shown once."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--scopes", nargs="+", choices=Scope.values, help="Default: all scopes")
        parser.add_argument("--kind", choices=SourceKind.values, default=SourceKind.GENERIC)
        parser.add_argument(
            "--webhook-secret",
            default="",
            help="For --kind github|gitlab: the webhook's secret (GitHub signs with it, GitLab sends it as token)",
        )

    def handle(self, *args, name, scopes, kind, webhook_secret, **options):
        try:
            source, token = source_create(
                name=name,
                scopes=scopes,
                kind=kind,
                webhook_secret=webhook_secret,
                actor=Actor.command("create_ingest_token"),
                now=timezone.now(),
            )
        except PortalError as exc:
            raise CommandError(exc.detail) from exc
        self.stderr.write(f"Created source {source.name!r} with scopes {', '.join(source.scopes)}.")
        if source.webhook_secret:
            self.stderr.write(f"Its webhook URL: /api/v1/webhooks/{source.kind}/{source.name}/ (secret stored).")
        self.stdout.write(token)
