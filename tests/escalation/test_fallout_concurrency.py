"""Two detection runs at once (two workers) on real PostgreSQL connections, released together by a barrier:
exactly one fallout per rule and scope and one ticket entry, whichever run wins."""

import threading

import pytest
from django.db import connection
from django.utils import timezone

from escalation.choices import FalloutStatus, Role, TrackerKind
from escalation.models import Fallout, Notification, RoleDefaultTeam, TicketTracker
from escalation.services.fallout import detect_patterns
from tests.escalation.fallout_support import failure_ids, reported

pytestmark = [
    # serialized_rollback restores the data migrations' rows (rules, teams, matrix) for the next test.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.concurrency,
]

ROUNDS = 5


def detect_together(workers: int = 2) -> list:
    """Run detect_patterns in ``workers`` threads, each on its own connection, all released at once."""
    barrier = threading.Barrier(workers)
    results, errors = [], []
    now = timezone.now()

    def work() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(detect_patterns(now=now))
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a detection run hung"
    if errors:
        raise errors[0]
    return results


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
