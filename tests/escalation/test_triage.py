"""QA triage: the queue in the admin (oldest first, time against the 15-minute target, the evidence,
unclassified shown as such), one-click acknowledge or correct, and the verdict counted for the deciding rule."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from escalation.choices import ChangeSource, FailureStatus, FailureType, Resolution, TriageVerdict
from escalation.models import ClassificationRule, Failure, TimelineKind
from escalation.selectors import rules_with_stats
from escalation.services.failures import failure_correct_type, failures_resolve
from escalation.services.triage import failures_confirm_type
from portal.audit import Actor
from portal.errors import RoleRequired
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

QUEUE = reverse("admin:escalation_failureawaitingtriage_changelist")
REFUSED = 'psycopg.OperationalError: connection to server at "db", port 5432 failed: Connection refused'


def report(api, **changes) -> Failure:
    return report_failure(api, **{"type": "", **changes})


def minutes_ago(minutes: int) -> str:
    return (timezone.now() - timedelta(minutes=minutes)).isoformat()


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def queue(api, qa_analyst) -> dict[str, Failure]:
    failures = {
        "newest": report(api, job="db-migrate", log_excerpt=REFUSED, finished_at=minutes_ago(3)),
        "oldest": report(api, job="deploy", log_excerpt="exit status 1", finished_at=minutes_ago(40)),
        "middle": report(
            api, job="build", log_excerpt="src/a.ts(1,1): error TS2304: nope", finished_at=minutes_ago(20)
        ),
        "feature_branch": report(api, branch="feature/x", job="lint", log_excerpt="exit status 1"),
        "resolved": report(api, job="e2e", log_excerpt="exit status 1", finished_at=minutes_ago(30)),
    }
    failures_resolve(failure_ids=[failures["resolved"].pk], resolution=Resolution.FIXED,
                     actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN), now=timezone.now())  # fmt: skip
    return {name: Failure.objects.get(pk=f.pk) for name, f in failures.items()}


def test_the_queue_lists_open_protected_failures_awaiting_triage_oldest_first(queue, qa_analyst):
    response = logged_in(qa_analyst).get(QUEUE)

    assert response.status_code == 200
    shown = [f.pk for f in response.context["cl"].result_list]
    assert shown == [queue["oldest"].pk, queue["middle"].pk, queue["newest"].pk]


def test_each_row_shows_time_against_the_target_the_evidence_and_unclassified_as_such(queue, qa_analyst):
    page = logged_in(qa_analyst).get(QUEUE).content.decode()

    assert "40 min (target 15): 25 over" in page
    assert "3 min (target 15)" in page and "3 min (target 15):" not in page
    assert "<em>unclassified</em> (build_error)" in page and "no rule matched" in page
    assert "database-unreachable v1" in page and "Connection refused" in page
    assert "compiler-error v1" in page


def test_the_queue_filters_unclassified_and_over_target(queue, qa_analyst):
    client = logged_in(qa_analyst)
    unclassified = client.get(QUEUE, {"classified": "fallback"}).context["cl"].result_list
    over = client.get(QUEUE, {"over_target": "yes"}).context["cl"].result_list
    assert [f.pk for f in unclassified] == [queue["oldest"].pk]
    assert {f.pk for f in over} == {queue["oldest"].pk, queue["middle"].pk}


def test_one_click_acknowledge_confirms_the_type_and_counts_for_the_rule(queue, qa_analyst):
    failure = queue["newest"]
    client = logged_in(qa_analyst)

    response = client.post(reverse("admin:triage_confirm", args=[failure.pk]), follow=True)

    failure.refresh_from_db()
    assert (failure.status, failure.triage_verdict) == (FailureStatus.ACKNOWLEDGED, TriageVerdict.CONFIRMED)
    assert (failure.acknowledged_by, failure.triaged_by) == (qa_analyst, qa_analyst)
    assert [str(m) for m in response.context["messages"]] == ["1 failure(s) acknowledged with their type confirmed."]
    assert failure.pk not in [f.pk for f in response.context["cl"].result_list]
    entry = failure.timeline.get(kind=TimelineKind.TYPE_CONFIRMED)
    assert "rule 'database-unreachable' marked right" in entry.message
    stats = rules_with_stats().get(name="database-unreachable")
    assert (stats.matches, stats.confirmations, stats.corrections) == (1, 1, 0)


def test_one_click_correct_retypes_reroutes_and_counts_against_the_rule(queue, qa_analyst):
    failure = queue["middle"]  # compiler-error decided build_error
    client = logged_in(qa_analyst)

    client.post(reverse("admin:triage_correct", args=[failure.pk]), {f"type_{failure.pk}": FailureType.CI_RUNNER})

    failure.refresh_from_db()
    assert (failure.failure_type, failure.triage_verdict, failure.owner_team.name) == (
        FailureType.CI_RUNNER,
        TriageVerdict.CORRECTED,
        "DevOps",
    )
    assert failure.classification_rule.name == "compiler-error"  # kept: the correction counts against it
    assert "rule 'compiler-error' marked wrong" in failure.timeline.get(kind=TimelineKind.TYPE_CORRECTED).message
    stats = rules_with_stats().get(name="compiler-error")
    assert (stats.matches, stats.confirmations, stats.corrections) == (1, 0, 1)
    assert failure.pk not in [f.pk for f in client.get(QUEUE).context["cl"].result_list]


def test_the_bulk_actions_confirm_and_correct_the_selection(queue, qa_analyst):
    client = logged_in(qa_analyst)
    ids = [queue["oldest"].pk, queue["middle"].pk]
    client.post(QUEUE, {"action": "confirm_type", "_selected_action": ids, "failure_type": "", "note": "seen"})
    assert set(Failure.objects.filter(pk__in=ids).values_list("triage_verdict", flat=True)) == {"confirmed"}

    client.post(QUEUE, {"action": "correct_type", "_selected_action": [queue["newest"].pk],
                        "failure_type": FailureType.DATABASE_TEST})  # fmt: skip
    assert Failure.objects.get(pk=queue["newest"].pk).failure_type == FailureType.DATABASE_TEST


def test_a_role_without_triage_rights_sees_the_queue_but_changes_nothing(queue, backend_developer):
    client = logged_in(backend_developer)
    assert client.get(QUEUE).status_code == 200

    response = client.post(reverse("admin:triage_confirm", args=[queue["newest"].pk]), follow=True)

    assert Failure.objects.get(pk=queue["newest"].pk).triage_verdict == ""
    assert [m.level_tag for m in response.context["messages"]] == ["error"]
    with pytest.raises(RoleRequired):
        failures_confirm_type(failure_ids=[queue["newest"].pk], actor=Actor.of_user(backend_developer,
                              ChangeSource.ADMIN), now=timezone.now())  # fmt: skip


def test_confirming_twice_or_a_resolved_failure_changes_nothing(queue, qa_analyst):
    actor = Actor.of_user(qa_analyst, ChangeSource.ADMIN)
    assert failures_confirm_type(failure_ids=[queue["newest"].pk], actor=actor, now=timezone.now()) == 1
    assert failures_confirm_type(failure_ids=[queue["newest"].pk], actor=actor, now=timezone.now()) == 0
    assert failures_confirm_type(failure_ids=[queue["resolved"].pk], actor=actor, now=timezone.now()) == 0


def test_precision_is_confirmations_over_verdicts_per_rule(api, qa_analyst):
    actor = Actor.of_user(qa_analyst, ChangeSource.ADMIN)
    failures = [report(api, job=f"db-job-{n}", log_excerpt=REFUSED) for n in range(4)]
    failures_confirm_type(failure_ids=[f.pk for f in failures[:3]], actor=actor, now=timezone.now())
    failure_correct_type(failure_id=failures[3].pk, failure_type=FailureType.CI_RUNNER, actor=actor, now=timezone.now())

    page = logged_in(qa_analyst).get(reverse("admin:escalation_classificationrule_changelist")).content.decode()

    rule = ClassificationRule.objects.get(name="database-unreachable")
    stats = rules_with_stats().get(pk=rule.pk)
    assert (stats.matches, stats.confirmations, stats.corrections) == (4, 3, 1)
    assert "75%" in page


def test_the_queue_of_30_failures_uses_a_bounded_number_of_queries(api, qa_analyst, django_assert_max_num_queries):
    for n in range(30):
        report(api, repository=f"acme/repo-{n % 5}", job=f"job-{n}", log_excerpt=(REFUSED, "exit 1")[n % 2])
    client = logged_in(qa_analyst)

    with django_assert_max_num_queries(12):
        response = client.get(QUEUE)

    assert len(response.context["cl"].result_list) == 30
