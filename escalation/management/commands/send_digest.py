from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from escalation.choices import DigestKind
from escalation.models import Team
from escalation.services.digests.compose import digest_compose, digest_send
from escalation.services.digests.schedule import DigestPlan, digests_planned


class Command(BaseCommand):
    help = (
        "Send the latest daily standup digest, weekly stakeholder report or monthly process review now: each "
        "audience's whose moment has come, once per period (a second run sends nothing and says so)."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=DigestKind.values)
        parser.add_argument("--team", default="", help="Only this team's digest (by name), or what its roles get")
        parser.add_argument("--at", default="", help="Act as if it were this ISO time (default: now; naive = UTC)")
        parser.add_argument("--dry-run", action="store_true", help="Print the text; store and send nothing")

    def handle(self, *args, kind: str, team: str, at: str, dry_run: bool, **options):
        now = _moment(at) if at else timezone.now()
        if team and not Team.objects.filter(name=team).exists():
            raise CommandError(f"no team is named {team!r}")
        plans = digests_planned(kind, now=now, team_name=team)
        if not plans:
            self.stdout.write(f"No {DigestKind(kind).label.lower()} is due at {now.isoformat()}.")
        for plan in plans:
            if dry_run:
                composed = digest_compose(plan, now=now)
                self.stdout.write(f"--- {_who(plan)} (dry run: not stored, not sent)\n{composed.text}")
                continue
            sent = digest_send(plan, now=now, queued_at=timezone.now())
            number = sent.digest.pk
            if not sent.created:
                self.stdout.write(f"{_who(plan)}: already sent (digest #{number}); nothing sent.")
            elif sent.notifications:
                self.stdout.write(f"{_who(plan)}: digest #{number} stored, {sent.notifications} message(s) queued.")
            else:
                self.stdout.write(f"{_who(plan)}: #{number} stored, no message (nothing to report or no channel).")


def _who(plan: DigestPlan) -> str:
    start, end = plan.period_start.isoformat(), plan.period_end.isoformat()
    return f"{DigestKind(plan.kind).label} for {plan.audience} ({plan.team.name}), {start} to {end}"


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--at {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
