from django.core.management.base import BaseCommand
from django.utils import timezone

from escalation.services.notifications import notifications_deliver


class Command(BaseCommand):
    help = "Run one notification delivery pass now, as the every-minute schedule does, and print its summary."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=200, help="Entries to claim at most (default 200)")

    def handle(self, *args, **options):
        result = notifications_deliver(now=timezone.now(), limit=options["limit"])
        self.stdout.write(result.summary())
