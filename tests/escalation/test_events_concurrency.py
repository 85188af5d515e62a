"""Concurrent deliveries on real PostgreSQL connections, released together by a barrier.

Each thread has its own Django test Client and so its own database connection (closed at the end).
Every scenario repeats for ROUNDS rounds with fresh run ids and repositories, so a race that is lost
only now and then still shows.
"""

from collections import Counter

import pytest
from django.test import Client
from django.utils import timezone

from escalation.choices import FailureStatus
from escalation.models import CIEvent, CIJob, Failure, FailureOccurrence, Repository, TimelineEntry
from escalation.services.sources import source_create
from portal.audit import Actor
from tests.concurrency import run_together

pytestmark = [
    # serialized_rollback restores the data migrations' rows (matrix, rules, teams, role groups)
    # that the flush after a transactional test removes, for whichever test runs next.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.concurrency,
]

ROUNDS = 20
URL = "/api/v1/events/"

EVENT = {
    "source": "github-actions",
    "branch": "main",
    "commit": "9f1c2e7",
    "commit_author": "dev@example.com",
    "attempt": 1,
    "job": "unit-tests",
    "status": "failure",
    "log_excerpt": "FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4",
}


@pytest.fixture
def token() -> str:
    _, token = source_create(name="ci", actor=Actor.task("test"), now=timezone.now())
    return token


def post_together(token: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """POST each body from its own thread and connection, all released at once; answers in order."""

    def post(body: dict) -> tuple[int, dict]:
        response = Client(headers={"authorization": f"Bearer {token}"}).post(URL, body, content_type="application/json")
        return response.status_code, response.json()

    return run_together([lambda b=body: post(b) for body in bodies])


def event(**changes) -> dict:
    return {**EVENT, **changes}


def test_one_failure_reported_at_once_from_two_connections_is_one_failure_with_two_occurrences(token):
    for round_ in range(ROUNDS):
        repository = f"acme/race-open-{round_}"
        if round_ % 2:  # odd rounds also race to create the repository
            Repository.objects.create(name=repository)
        answers = post_together(
            token,
            [event(repository=repository, run_id=f"{round_}-a"), event(repository=repository, run_id=f"{round_}-b")],
        )
        assert [status for status, _ in answers] == [201, 201], answers
        assert answers[0][1]["id"] == answers[1][1]["id"], answers
        assert sorted(body["occurrences"] for _, body in answers) == [1, 2], answers
        failure = Failure.objects.get(repository__name=repository)
        assert failure.id == answers[0][1]["id"]
        assert failure.occurrence_count == 2
        assert FailureOccurrence.objects.filter(failure=failure).count() == 2
        assert TimelineEntry.objects.filter(failure=failure, kind="opened").count() == 1
        assert Repository.objects.filter(name=repository).count() == 1


@pytest.mark.parametrize("connections", [2, 4])
def test_one_idempotency_key_posted_at_once_is_stored_once(token, connections):
    """Rounds of three kinds: a repository first seen (one transaction per event), and a known one with
    nothing open (the loser's second statement fails on the key) or with the failure open (its first)."""
    for round_ in range(ROUNDS):
        repository = f"acme/race-key-{connections}-{round_}"
        key = f"delivery-{connections}-{round_}"
        occurrences = 1
        if round_ % 3:
            Repository.objects.create(name=repository)
        if round_ % 3 == 2:
            post_together(token, [event(repository=repository, run_id=f"{round_}-earlier")])
            occurrences += 1
        body = event(repository=repository, run_id=f"{round_}", idempotency_key=key)
        answers = post_together(token, [body] * connections)
        statuses = Counter(status for status, _ in answers)
        assert statuses == {201: 1, 200: connections - 1}, answers
        assert CIEvent.objects.filter(idempotency_key=key).count() == 1
        event_id = CIEvent.objects.get(idempotency_key=key).id
        failure = Failure.objects.get(repository__name=repository)
        for status, answer in answers:
            assert answer["event_id"] == event_id
            assert answer["duplicate"] is (status == 200)
            assert answer["id"] == failure.id
        assert failure.occurrence_count == occurrences
        assert FailureOccurrence.objects.filter(failure=failure).count() == occurrences
        assert CIJob.objects.filter(run__repository__name=repository, run__run_id=f"{round_}").count() == 1


def test_one_pass_posted_at_once_is_stored_once(token):
    for round_ in range(ROUNDS):
        repository = f"acme/race-pass-{round_}"
        Repository.objects.create(name=repository)
        body = event(repository=repository, run_id=f"{round_}", status="success", log_excerpt="")
        answers = post_together(token, [body] * 3)
        assert Counter(status for status, _ in answers) == {201: 1, 200: 2}, answers
        assert len({answer["event_id"] for _, answer in answers}) == 1
        assert CIEvent.objects.filter(job__run__repository__name=repository).count() == 1
        assert not Failure.objects.filter(repository__name=repository).exists()


def test_a_success_racing_a_failure_of_the_same_job_never_leaves_the_failure_half_resolved(token):
    outcomes = Counter()
    for round_ in range(ROUNDS):
        repository = f"acme/race-recover-{round_}"
        failure_events = 1
        if round_ % 2:  # odd rounds start with an open failure that the success may recover
            post_together(token, [event(repository=repository, run_id=f"{round_}-0")])
            failure_events += 1
        failed, succeeded = post_together(
            token,
            [
                event(repository=repository, run_id=f"{round_}-1"),
                event(repository=repository, run_id=f"{round_}-2", status="success", log_excerpt=""),
            ],
        )
        assert failed[0] == 201 and succeeded[0] == 201, (failed, succeeded)
        failure_id = failed[1]["id"]
        # The failing event always lands on a failure that was open when it committed.
        assert failed[1]["status"] == "open"

        failures = list(Failure.objects.filter(repository__name=repository))
        open_ = [f for f in failures if f.status != FailureStatus.RESOLVED]
        assert len(open_) <= 1, "two open failures for one fingerprint"
        assert len({f.fingerprint for f in failures}) == 1
        if failure_id in succeeded[1]["recovered"]:
            outcomes["failure first"] += 1
            assert open_ == []
        else:
            outcomes["success first"] += 1
            assert [f.id for f in open_] == [failure_id]
        # Each failing event counted exactly once, on the failure it reported.
        occurrences = FailureOccurrence.objects.filter(failure__repository__name=repository)
        assert occurrences.count() == failure_events
        assert sum(f.occurrence_count for f in failures) == failure_events
        for failure in failures:
            assert failure.occurrence_count == failure.occurrences.count()
            resolved_entries = failure.timeline.filter(kind="resolved").count()
            assert resolved_entries == (1 if failure.status == FailureStatus.RESOLVED else 0)
            if failure.status == FailureStatus.RESOLVED:
                assert failure.id in succeeded[1]["recovered"]
                assert failure.resolved_at is not None
    assert sum(outcomes.values()) == ROUNDS


def test_two_successes_of_one_job_at_once_recover_its_failure_once(token):
    """Both read the open failure; the one that locks it second finds it changed, reads again and is a pass."""
    for round_ in range(ROUNDS):
        repository = f"acme/race-successes-{round_}"
        ((status, opened),) = post_together(token, [event(repository=repository, run_id=f"{round_}-0")])
        assert status == 201
        answers = post_together(
            token,
            [event(repository=repository, run_id=f"{round_}-{n}", status="success", log_excerpt="") for n in (1, 2)],
        )
        assert [status for status, _ in answers] == [201, 201], answers
        assert sorted(len(answer["recovered"]) for _, answer in answers) == [0, 1]
        failure = Failure.objects.get(pk=opened["id"])
        assert failure.status == FailureStatus.RESOLVED
        assert failure.timeline.filter(kind="resolved").count() == 1
        assert CIEvent.objects.filter(job__run__repository__name=repository, status="success").count() == 2
