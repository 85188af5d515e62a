from django.core.management.base import BaseCommand
from django.utils import timezone

from escalation.services.engine import engine_sla_sweep


class Command(BaseCommand):
    help = "Run one SLA sweep now, as the every-minute schedule does, record it as the last sweep, print its summary."

    def handle(self, *args, **options):
        result = engine_sla_sweep(now=timezone.now())
        self.stdout.write(result.summary())
