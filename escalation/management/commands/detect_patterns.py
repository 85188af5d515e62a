from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from escalation.services.fallout import detect_patterns


class Command(BaseCommand):
    help = "Run the fallout rules now (as the 15-minute schedule does) and print a one-line summary."

    def add_arguments(self, parser):
        parser.add_argument("--at", help="Detect as of this ISO 8601 time (default: now); UTC when it has no offset")

    def handle(self, *args, **options):
        now = timezone.now()
        if options["at"]:
            try:
                now = datetime.fromisoformat(options["at"])
            except ValueError:
                raise CommandError(f"--at must be an ISO 8601 time, not {options['at']!r}") from None
            if timezone.is_naive(now):
                now = now.replace(tzinfo=UTC)
        self.stdout.write(detect_patterns(now=now).summary())
