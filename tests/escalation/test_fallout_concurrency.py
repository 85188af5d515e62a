"""Two detection runs at once (two workers) on real PostgreSQL connections, released together by a barrier:
exactly one fallout per rule and scope and one ticket entry, whichever run wins."""

import pytest
from django.utils import timezone

from escalation.choices import FalloutStatus, Role, TrackerKind
from escalation.models import Fallout, Notification, RoleDefaultTeam, TicketTracker
from escalation.services.fallout import detect_patterns
from tests.concurrency import run_together
from tests.escalation.fallout_support import failure_ids, reported

pytestmark = [
    # serialized_rollback restores the data migrations' rows (rules, teams, matrix) for the next test.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.concurrency,
]

ROUNDS = 5


def detect_together(workers: int = 2) -> list:
    """detect_patterns in ``workers`` threads, each on its own connection, all released at once."""
    now = timezone.now()
    return run_together([lambda: detect_patterns(now=now)] * workers)


def test_two_concurrent_runs_open_one_fallout_and_one_ticket_entry_per_scope(api):
    team = RoleDefaultTeam.objects.get(role=Role.DEVOPS_SPECIALIST).team
    TicketTracker.objects.create(team=team, kind=TrackerKind.GITHUB, base_url="https://api.github.com",
                                 project="acme/ops", token="t0ken-for-the-race")  # fmt: skip
    for round_ in range(ROUNDS):
        label = f"race-runner-{round_}"
        ids = reported(api, 3, type="ci_runner", runner=label)
        results = detect_together()
        [fallout] = Fallout.objects.filter(rule__code="runner_hardening", scope_key=label)
        assert (fallout.status, failure_ids(fallout)) == (FalloutStatus.OPEN, set(ids))
        assert Notification.objects.filter(fallout=fallout, tracker__isnull=False).count() == 1
        assert sum(r.opened for r in results) == 1  # the other run found it open and changed nothing
