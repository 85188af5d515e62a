"""The contract of POST /api/v1/events/: what a CI outcome opens, repeats, recovers and routes to."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from escalation.choices import ChangeSource, FailureStatus, Resolution, Role
from escalation.models import (
    CIEvent,
    CIJob,
    CIRun,
    Failure,
    FailureOccurrence,
    OwnershipRule,
    Repository,
    TimelineEntry,
)
from escalation.services.failures import failure_fingerprint
from portal.models import AuditAction, AuditEntry
from tests.factories import EVENT, IdentityFactory, TeamFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"


UNIT_TEST_BUDGET = timedelta(hours=4)


def post(api, **changes):
    return api.post(URL, {**EVENT, **changes}, content_type="application/json")


def accepted(response, status: int = 201) -> dict:
    assert response.status_code == status, response.content
    return response.json()


def row_counts() -> dict[str, int]:
    models = (CIEvent, CIRun, CIJob, Failure, FailureOccurrence, TimelineEntry, AuditEntry, Repository)
    return {model.__name__: model.objects.count() for model in models}


def test_a_failure_answers_201_with_the_failure_it_opened(api):
    before = timezone.now()
    body = accepted(post(api))
    failure = Failure.objects.get()
    assert body["id"] == failure.id
    assert body["event_id"] == CIEvent.objects.get().id
    assert body["duplicate"] is False
    assert body["type"] == "unit_test"
    assert body["status"] == "open"
    assert body["owner"] == "Senior Dev Triage"  # unmatched author, repository without an owning team
    assert body["occurrences"] == 1
    assert body["recovered"] == []
    assert body["warnings"] == []
    due = parse_datetime(body["sla_due_at"])
    assert before + UNIT_TEST_BUDGET <= due <= timezone.now() + UNIT_TEST_BUDGET
    assert due == failure.sla_due_at


def test_the_same_event_again_answers_200_as_a_duplicate_and_stores_nothing(api):
    first = accepted(post(api))
    counts = row_counts()
    again = accepted(post(api), status=200)
    assert again["duplicate"] is True
    assert again["event_id"] == first["event_id"]
    assert again["id"] == first["id"]
    assert row_counts() == counts
    assert Failure.objects.get().occurrence_count == 1


def test_an_idempotency_key_dedups_even_when_the_bodies_differ(api):
    first = accepted(post(api, idempotency_key="delivery-7"))
    counts = row_counts()
    again = accepted(
        post(api, idempotency_key="delivery-7", run_id="2002", job="lint", repository="acme/other"), status=200
    )
    assert again["duplicate"] is True
    assert again["event_id"] == first["event_id"]
    assert again["id"] == first["id"]
    assert row_counts() == counts
    assert not Repository.objects.filter(name="acme/other").exists()


def test_the_same_body_under_a_new_idempotency_key_is_a_new_event(api):
    accepted(post(api, idempotency_key="delivery-1"))
    body = accepted(post(api, idempotency_key="delivery-2"))
    assert body["duplicate"] is False
    assert CIEvent.objects.count() == 2


def test_a_repeat_in_a_new_run_adds_an_occurrence_to_the_same_failure(api):
    first = accepted(post(api))
    second = accepted(post(api, run_id="1002", commit="a1b2c3d"))
    assert second["id"] == first["id"]
    assert second["occurrences"] == 2
    failure = Failure.objects.get()
    assert failure.occurrence_count == 2
    assert failure.occurrences.count() == 2
    assert failure.latest_run.run_id == "1002"
    assert failure.fingerprint == failure_fingerprint(
        repository="acme/shop", branch="main", job="unit-tests", failure_type="unit_test"
    )


@pytest.mark.parametrize("change", [{"branch": "release/2.0"}, {"job": "unit-tests-py312"}], ids=repr)
def test_a_different_branch_or_job_opens_a_separate_failure(api, change):
    first = accepted(post(api))
    other = accepted(post(api, run_id="1002", **change))
    assert other["id"] != first["id"]
    assert other["occurrences"] == 1
    assert Failure.objects.count() == 2
    assert len(set(Failure.objects.values_list("fingerprint", flat=True))) == 2


def test_the_fingerprint_is_stable_across_attempts_of_a_run(api):
    first = accepted(post(api, attempt=1))
    second = accepted(post(api, attempt=2))
    third = accepted(post(api, attempt=3))
    assert first["id"] == second["id"] == third["id"]
    failure = Failure.objects.get()
    assert failure.occurrence_count == 3
    assert CIRun.objects.filter(run_id="1001").count() == 3


def test_a_success_of_the_same_job_resolves_its_open_failures_as_recovered(api):
    opened = accepted(post(api))
    body = accepted(post(api, run_id="1002", status="success", log_excerpt=""))
    assert body["recovered"] == [opened["id"]]
    assert body["id"] is None and body["status"] is None
    failure = Failure.objects.get(pk=opened["id"])
    assert failure.status == FailureStatus.RESOLVED
    assert failure.resolution == Resolution.RECOVERED
    assert failure.resolved_at is not None
    entry = failure.timeline.get(kind="resolved")
    assert entry.source == ChangeSource.API
    assert entry.actor == "source:ci"
    audit = AuditEntry.objects.get(object_id=str(failure.id), action=AuditAction.UPDATE)
    assert audit.source == ChangeSource.API
    assert audit.before["status"] == "open"
    assert audit.after["status"] == "resolved"
    assert audit.after["resolution"] == "recovered"


def test_a_failure_after_the_recovery_opens_a_new_failure(api):
    opened = accepted(post(api))
    accepted(post(api, run_id="1002", status="success", log_excerpt=""))
    reopened = accepted(post(api, run_id="1003"))
    assert reopened["id"] != opened["id"]
    assert reopened["status"] == "open"
    assert reopened["occurrences"] == 1
    assert Failure.objects.get(pk=opened["id"]).status == FailureStatus.RESOLVED
    assert Failure.objects.filter(status=FailureStatus.OPEN).count() == 1


def test_a_success_resolves_nothing_on_another_branch_or_job(api):
    opened = accepted(post(api))
    accepted(post(api, run_id="1002", status="success", branch="release/2.0"))
    accepted(post(api, run_id="1003", status="success", job="lint"))
    assert Failure.objects.get(pk=opened["id"]).status == FailureStatus.OPEN


def test_a_valid_type_hint_wins_over_the_rules(api):
    body = accepted(post(api, type="integration_test"))
    assert body["type"] == "integration_test"
    assert body["warnings"] == []
    failure = Failure.objects.get()
    assert failure.classified_by == "type hint"
    assert failure.matrix_snapshot["failure_type"] == "integration_test"


@pytest.mark.parametrize("hint", ["flaky", "Unit_Test", "x" * 32], ids=["unknown", "wrong case", "long"])
def test_an_invalid_type_hint_is_ignored_with_a_warning(api, hint):
    body = accepted(post(api, type=hint))
    assert body["type"] == "unit_test"
    assert len(body["warnings"]) == 1
    assert repr(hint) in body["warnings"][0]
    assert "not a failure type" in body["warnings"][0]
    assert Failure.objects.get().classified_by != "type hint"


def test_a_finished_at_in_the_future_is_clamped_to_now(api):
    before = timezone.now()
    body = accepted(post(api, finished_at=(before + timedelta(days=3)).isoformat()))
    after = timezone.now()
    due = parse_datetime(body["sla_due_at"])
    assert before + UNIT_TEST_BUDGET <= due <= after + UNIT_TEST_BUDGET
    failure = Failure.objects.get()
    assert before <= failure.first_seen_at <= after


def test_a_finished_at_in_the_past_starts_the_clock_then(api):
    finished = timezone.now() - timedelta(hours=1)
    body = accepted(post(api, finished_at=finished.isoformat()))
    assert parse_datetime(body["sla_due_at"]) == finished + UNIT_TEST_BUDGET


def test_a_feature_branch_failure_is_recorded_without_an_sla(api):
    body = accepted(post(api, branch="feature/cart-total"))
    assert body["status"] == "open"
    assert body["sla_due_at"] is None
    failure = Failure.objects.get()
    assert failure.is_protected_branch is False
    assert failure.sla_due_at is None
    assert failure.triage_due_at is None
    assert "unprotected branch" in failure.timeline.get().message


def test_a_repository_default_branch_is_protected(api):
    Repository.objects.create(name="acme/shop", default_branch="trunk")
    body = accepted(post(api, branch="trunk"))
    assert body["sla_due_at"] is not None
    assert Failure.objects.get().is_protected_branch is True


def test_a_commit_author_matched_through_an_identity_is_assignee_and_their_team_owns_it(api):
    identity = IdentityFactory(value="dev@example.com", person__team=TeamFactory(name="Checkout"))
    body = accepted(post(api, commit_author="Dev@Example.com"))
    assert body["type"] == "unit_test"
    assert body["owner"] == "Checkout"
    failure = Failure.objects.get()
    assert failure.assignee == identity.person
    assert failure.owner_team.name == "Checkout"
    assert failure.secondary_team.name == "QA"


def test_an_unmatched_author_routes_to_the_repository_owning_team(api):
    IdentityFactory(value="someone-else@example.com")
    Repository.objects.create(name="acme/shop", owning_team=TeamFactory(name="Shop"))
    body = accepted(post(api, commit_author="stranger@example.com"))
    assert body["owner"] == "Shop"
    assert Failure.objects.get().assignee is None


def test_an_unmatched_author_without_an_owning_team_routes_to_senior_dev_triage(api):
    body = accepted(post(api, commit_author="stranger@example.com"))
    assert body["owner"] == "Senior Dev Triage"
    assert Failure.objects.get().assignee is None


def test_an_ownership_rule_overrides_the_role_default_team(api):
    OwnershipRule.objects.create(
        repository_pattern="acme/*", role=Role.BACKEND_DEVELOPER, team=TeamFactory(name="Shop Backend")
    )
    body = accepted(post(api, type="integration_test"))
    assert body["owner"] == "Shop Backend"
    other = accepted(post(api, repository="globex/api", type="integration_test"))
    assert other["owner"] == "Backend"


def test_a_log_excerpt_over_the_limit_keeps_its_tail(api):
    limit = settings.PORTAL_LOG_EXCERPT_LIMIT
    log = "setup noise\n" + "." * limit + "\nFAILED tests/test_cart.py::test_total - AssertionError"
    accepted(post(api, log_excerpt=log))
    stored = CIEvent.objects.get().log_excerpt
    assert len(stored) == limit
    assert stored == log[-limit:]
    assert stored.endswith("AssertionError")
    assert not stored.startswith("setup noise")


def test_events_with_a_long_natural_key_are_told_apart_and_deduplicated(api):
    repository = "acme/" + "deeply-nested-group/" * 12 + "shop"
    assert len(repository) <= 255 and len(EVENT["source"]) + len(repository) > 255
    first = accepted(post(api, repository=repository, run_id="1001"))
    second = accepted(post(api, repository=repository, run_id="1002"))
    assert second["event_id"] != first["event_id"]
    assert second["occurrences"] == 2
    again = accepted(post(api, repository=repository, run_id="1002"), status=200)
    assert again["duplicate"] is True
    assert again["event_id"] == second["event_id"]
    assert CIEvent.objects.count() == 2
