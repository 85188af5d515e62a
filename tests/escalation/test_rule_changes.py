"""Rule changes: the preview lists exactly the recent failures whose type would change; applying it saves a
new rule version, re-types those failures, re-routes the open ones and writes each change on the timeline.
Large previews and applies run as django-q2 tasks with progress."""

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Task

from escalation import tasks
from escalation.choices import ChangeSource, FailureStatus, FailureType, Resolution, RuleChangeKind, RuleChangeStatus
from escalation.exceptions import RuleChangeStale
from escalation.models import ClassificationRule, ClassificationRuleVersion, Failure, RuleChange, TimelineKind
from escalation.services.failures import failures_resolve
from escalation.services.rule_changes import (
    rule_change_apply,
    rule_change_discard,
    rule_change_repreview,
    rule_change_submit,
    rule_state,
)
from escalation.services.triage import failures_confirm_type
from portal.audit import Actor
from portal.errors import RoleRequired
from portal.models import AuditAction, AuditEntry
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

WIDGET = "ERROR: widget frobnication failed on shard 3"
NEW_RULE = {
    "name": "widget-frobnication",
    "stage": 20,
    "position": 225,
    "field": "log",
    "event_field": "",
    "pattern": r"widget frobnication failed",
    "failure_type": FailureType.TEST_ENVIRONMENT,
    "tags": ["flaky_suspect"],
    "is_enabled": True,
    "description": "",
}


@pytest.fixture
def qa(qa_analyst) -> Actor:
    return Actor.of_user(qa_analyst, ChangeSource.ADMIN)


def report(api, **changes) -> Failure:
    """A failure the rules classify (no type hint)."""
    return report_failure(api, **{"type": "", **changes})


def days_ago(days: int) -> str:
    return (timezone.now() - timedelta(days=days)).isoformat()


def create(qa: Actor, **changes) -> RuleChange:
    return rule_change_submit(
        kind=RuleChangeKind.CREATE, rule=None, proposed={**NEW_RULE, **changes}, actor=qa, now=timezone.now()
    )


def edit(qa: Actor, name: str, **changes) -> RuleChange:
    rule = ClassificationRule.objects.get(name=name)
    return rule_change_submit(
        kind=RuleChangeKind.UPDATE, rule=rule, proposed={**rule_state(rule), **changes}, actor=qa, now=timezone.now()
    )


def effects(change: RuleChange) -> dict[int, tuple]:
    return {e.failure_id: (e.from_type, e.to_type, e.to_classified_by) for e in change.effects.all()}


@pytest.fixture
def recent(api, qa) -> dict[str, Failure]:
    """Failures that a new log rule on WIDGET would or would not re-type, one reason each."""
    failures = {
        "unmatched_open": report(api, job="deploy", log_excerpt=f"step 1\n{WIDGET}\nexit 1"),
        "unmatched_resolved": report(api, repository="acme/billing", job="deploy", log_excerpt=WIDGET),
        "by_a_later_rule": report(api, job="deploy-2", log_excerpt=f"{WIDGET}\nFAILED tests/a.py::t - AssertionError"),
        "by_an_earlier_rule": report(api, job="deploy-3", log_excerpt=f"{WIDGET}\nNo space left on device"),
        "type_hint": report(api, job="deploy-4", log_excerpt=WIDGET, type="build_error"),
        "confirmed": report(api, job="deploy-5", log_excerpt=WIDGET),
        "too_old": report(api, job="deploy-6", log_excerpt=WIDGET, finished_at=days_ago(31)),
        "other_text": report(api, job="deploy-7", log_excerpt="exit status 1"),
    }
    failures_resolve(failure_ids=[failures["unmatched_resolved"].pk], resolution=Resolution.FIXED, actor=qa,
                     now=timezone.now())  # fmt: skip
    failures_confirm_type(failure_ids=[failures["confirmed"].pk], actor=qa, now=timezone.now())
    return {name: Failure.objects.get(pk=f.pk) for name, f in failures.items()}


def test_the_preview_lists_exactly_the_recent_rule_decided_failures_whose_type_would_change(recent, qa):
    assert recent["by_a_later_rule"].failure_type == FailureType.UNIT_TEST
    assert recent["by_an_earlier_rule"].failure_type == FailureType.CI_RUNNER

    change = create(qa)

    assert change.status == RuleChangeStatus.PREVIEWED
    assert effects(change) == {
        recent[name].pk: (before, FailureType.TEST_ENVIRONMENT, "widget-frobnication")
        for name, before in [
            ("unmatched_open", FailureType.BUILD_ERROR),
            ("unmatched_resolved", FailureType.BUILD_ERROR),
            ("by_a_later_rule", FailureType.UNIT_TEST),
        ]
    }
    assert change.affected_count == 3
    evidence = change.effects.get(failure=recent["unmatched_open"]).to_evidence
    assert evidence == WIDGET
    # a preview changes nothing
    assert not ClassificationRule.objects.filter(name="widget-frobnication").exists()
    assert Failure.objects.get(pk=recent["unmatched_open"].pk).failure_type == FailureType.BUILD_ERROR


def test_applying_reclassifies_reroutes_the_open_ones_due_from_their_opening_and_writes_the_timeline(recent, qa):
    change = create(qa)
    opened = recent["unmatched_open"]
    assert opened.owner_team.name == "Senior Dev Triage"  # build_error: code author unknown -> last resort

    applied = rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())

    assert applied.status == RuleChangeStatus.APPLIED
    rule = ClassificationRule.objects.get(name="widget-frobnication")
    assert (applied.rule, rule.version, applied.applied_version) == (rule, 1, 1)
    failure = Failure.objects.get(pk=opened.pk)
    assert (failure.failure_type, failure.tags, failure.classified_by) == (
        FailureType.TEST_ENVIRONMENT,
        ["flaky_suspect"],
        "widget-frobnication",
    )
    assert (failure.classification_rule, failure.classification_rule_version) == (rule, 1)
    assert failure.classification_text == WIDGET
    assert failure.matrix_snapshot["failure_type"] == FailureType.TEST_ENVIRONMENT
    assert (failure.owner_team.name, failure.secondary_team.name) == ("DevOps", "QA")
    assert failure.sla_due_at == opened.first_seen_at + timedelta(hours=4)
    entry = failure.timeline.get(kind=TimelineKind.RECLASSIFIED)
    assert entry.message.startswith(f"Reclassified from build_error to test_environment by rule change #{change.pk}")
    assert "owner DevOps" in entry.message
    assert (entry.actor, entry.data["rule_change"], entry.data["evidence"]) == ("qa_analyst", change.pk, WIDGET)
    audit = AuditEntry.objects.get(content_type=ContentType.objects.get_for_model(Failure), object_id=str(opened.pk),
                                   reason=f"rule change #{change.pk}")  # fmt: skip
    assert (audit.before["failure_type"], audit.after["failure_type"]) == ("build_error", "test_environment")


def test_a_resolved_failure_changes_type_but_keeps_its_owner_and_snapshot(recent, qa):
    resolved = recent["unmatched_resolved"]
    rule_change_apply(change_id=create(qa).pk, actor=qa, now=timezone.now())

    failure = Failure.objects.get(pk=resolved.pk)
    assert (failure.status, failure.failure_type) == (FailureStatus.RESOLVED, FailureType.TEST_ENVIRONMENT)
    assert failure.owner_team == resolved.owner_team
    assert failure.matrix_snapshot == resolved.matrix_snapshot
    assert failure.timeline.filter(kind=TimelineKind.RECLASSIFIED).count() == 1


def test_applying_writes_the_rule_version_and_the_audit_entry(recent, qa):
    change = create(qa)
    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())

    rule = ClassificationRule.objects.get(name="widget-frobnication")
    version = ClassificationRuleVersion.objects.get(rule=rule)
    assert (version.version, version.kind, version.rule_change, version.changed_by.username) == (
        1,
        "create",
        change,
        "qa_analyst",
    )
    assert version.state["pattern"] == NEW_RULE["pattern"]
    audit = AuditEntry.objects.get(content_type=ContentType.objects.get_for_model(ClassificationRule))
    assert (audit.action, audit.after["name"], audit.reason) == (AuditAction.CREATE, "widget-frobnication",
                                                                 f"rule change #{change.pk}")  # fmt: skip


def test_editing_the_deciding_rule_classifies_its_failures_again_by_the_whole_proposed_set(api, qa):
    disk = report(api, job="deploy", log_excerpt="write /var/lib/docker/tmp/x: no space left on device")
    dns = report(api, job="deploy-2", log_excerpt="curl: (6) Could not resolve host: example.com")
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    narrower = rule.pattern.replace("No space left on device|", "")

    change = edit(qa, "runner-disk-network", pattern=narrower)
    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())

    assert effects(change) == {disk.pk: (FailureType.CI_RUNNER, FailureType.BUILD_ERROR, "fallback")}
    disk.refresh_from_db()
    assert (disk.failure_type, disk.classified_by, disk.classification_rule) == ("build_error", "fallback", None)
    assert Failure.objects.get(pk=dns.pk).failure_type == FailureType.CI_RUNNER
    rule.refresh_from_db()
    assert (rule.version, rule.pattern) == (2, narrower)
    assert list(rule.versions.values_list("version", flat=True).order_by("version")) == [1, 2]


def test_deleting_a_rule_hands_its_failures_to_the_next_rule_or_the_fallback(api, qa):
    k6 = report(api, job="load", log_excerpt="ERRO[0031] thresholds on metrics 'http_req_duration' have been crossed")
    rule = ClassificationRule.objects.get(name="benchmark-regression")

    change = rule_change_submit(kind=RuleChangeKind.DELETE, rule=rule, proposed={}, actor=qa, now=timezone.now())
    assert effects(change) == {k6.pk: (FailureType.PERFORMANCE_REGRESSION, FailureType.BUILD_ERROR, "fallback")}
    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())

    assert not ClassificationRule.objects.filter(pk=rule.pk).exists()
    assert Failure.objects.get(pk=k6.pk).failure_type == FailureType.BUILD_ERROR
    deletion = ClassificationRuleVersion.objects.get(rule_name="benchmark-regression", kind="delete")
    assert (deletion.rule, deletion.version) == (None, 2)


def test_a_change_that_can_alter_no_type_is_saved_at_once_as_a_new_version(recent, qa):
    change = edit(qa, "runner-lost", description="GitHub and GitLab runner losses")

    assert (change.status, change.affected_count, change.applied_version) == (RuleChangeStatus.APPLIED, 0, 2)
    rule = ClassificationRule.objects.get(name="runner-lost")
    assert (rule.description, rule.version) == ("GitHub and GitLab runner losses", 2)


def test_a_pattern_change_whose_preview_finds_no_failure_is_applied_at_once(recent, qa):
    change = create(qa, pattern="nothing in the corpus says this")

    assert change.status == RuleChangeStatus.APPLIED and change.affected_count == 0
    assert ClassificationRule.objects.filter(name="widget-frobnication").exists()


def test_a_person_who_may_not_apply_changes_leaves_even_an_empty_preview_waiting(recent, qa, backend_developer):
    with pytest.raises(RoleRequired):
        rule_change_apply(change_id=create(qa).pk, actor=Actor.of_user(backend_developer, ChangeSource.ADMIN),
                          now=timezone.now())  # fmt: skip
    assert not ClassificationRule.objects.filter(name="widget-frobnication").exists()


def test_applying_is_refused_when_the_rule_changed_since_the_preview(recent, qa):
    stale = edit(qa, "runner-disk-network", pattern=r"(ENOSPC)")  # re-types "by_an_earlier_rule"
    assert stale.status == RuleChangeStatus.PREVIEWED
    edit(qa, "runner-disk-network", description="edited meanwhile")  # applied at once: version 2

    with pytest.raises(RuleChangeStale, match="is at version 2; this change was made on version 1"):
        rule_change_apply(change_id=stale.pk, actor=qa, now=timezone.now())
    with pytest.raises(RuleChangeStale):
        rule_change_repreview(change_id=stale.pk, actor=qa, now=timezone.now())
    assert ClassificationRule.objects.get(name="runner-disk-network").version == 2


def test_applying_is_refused_when_another_rule_changed_since_the_preview_until_it_is_previewed_again(recent, qa):
    change = create(qa)
    edit(qa, "runner-lost", description="edited meanwhile")

    with pytest.raises(RuleChangeStale, match="another rule changed"):
        rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())
    again = rule_change_repreview(change_id=change.pk, actor=qa, now=timezone.now())
    assert again.status == RuleChangeStatus.PREVIEWED
    assert rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now()).status == RuleChangeStatus.APPLIED


def test_a_failure_opened_after_the_preview_is_reclassified_when_the_change_is_applied(recent, api, qa):
    change = create(qa)
    late = report(api, job="late-job", log_excerpt=WIDGET)
    assert late.failure_type == FailureType.BUILD_ERROR

    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())

    assert Failure.objects.get(pk=late.pk).failure_type == FailureType.TEST_ENVIRONMENT
    assert change.effects.get(failure=late).found_at_apply is True


def test_a_failure_whose_new_type_is_already_open_for_its_job_is_skipped_with_the_reason(api, qa):
    twin = report(api, job="deploy", type=FailureType.TEST_ENVIRONMENT)
    failure = report(api, job="deploy", log_excerpt=WIDGET)
    change = create(qa)

    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())

    effect = change.effects.get(failure=failure)
    assert (effect.outcome, effect.outcome_note) == (
        "skipped",
        "another failure of this job is open as test_environment",
    )
    assert Failure.objects.get(pk=failure.pk).failure_type == FailureType.BUILD_ERROR
    assert Failure.objects.get(pk=twin.pk).status == FailureStatus.OPEN


def test_a_failure_triaged_after_the_preview_is_left_as_the_person_decided(recent, qa):
    change = create(qa)
    failures_confirm_type(failure_ids=[recent["unmatched_open"].pk], actor=qa, now=timezone.now())

    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())

    assert Failure.objects.get(pk=recent["unmatched_open"].pk).failure_type == FailureType.BUILD_ERROR
    assert change.effects.get(failure=recent["unmatched_open"]).outcome == "skipped"


def test_applying_twice_applies_once_and_a_discarded_change_is_never_applied(recent, qa):
    change = create(qa)
    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())
    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())
    assert (
        Failure.objects.get(pk=recent["unmatched_open"].pk).timeline.filter(kind=TimelineKind.RECLASSIFIED).count() == 1
    )

    other = edit(qa, "runner-disk-network", pattern=r"(ENOSPC)")
    rule_change_discard(change_id=other.pk, actor=qa, now=timezone.now())
    with pytest.raises(Exception, match="discarded"):
        rule_change_apply(change_id=other.pk, actor=qa, now=timezone.now())
    assert ClassificationRule.objects.get(name="runner-disk-network").version == 1


def test_a_large_preview_and_apply_run_as_django_q_tasks_with_progress(
    recent, qa, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.PORTAL_RULE_SYNC_LIMIT = 1
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 reads Q_CLUSTER once, at import

    with django_capture_on_commit_callbacks(execute=True):
        change = create(qa)
    assert change.status == RuleChangeStatus.PREVIEWING  # handed to the worker
    change.refresh_from_db()
    assert change.status == RuleChangeStatus.PREVIEWED and change.task_id
    # every candidate scanned: the fallbacks and the one a generic summary decided, not the earlier rule's
    assert change.progress_done == change.progress_total == 4
    assert change.affected_count == 3

    with django_capture_on_commit_callbacks(execute=True):
        applying = rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())
    assert applying.status == RuleChangeStatus.APPLYING
    change.refresh_from_db()
    assert (change.status, change.progress_done, change.progress_total) == (RuleChangeStatus.APPLIED, 3, 3)
    assert Failure.objects.get(pk=recent["unmatched_open"].pk).failure_type == FailureType.TEST_ENVIRONMENT
    assert set(Task.objects.values_list("func", flat=True)) == {
        "escalation.tasks.rule_change_preview",
        "escalation.tasks.rule_change_apply",
    }


def test_the_task_entry_points_call_the_services(recent, qa, settings):
    settings.PORTAL_RULE_SYNC_LIMIT = 1
    change = create(qa)  # queued: on_commit never fires inside the test's transaction

    assert tasks.rule_change_preview(change.pk) == f"rule change #{change.pk}: previewed, 3 failures would change"
    rule_change_apply(change_id=change.pk, actor=qa, now=timezone.now())
    assert tasks.rule_change_apply(change.pk) == f"rule change #{change.pk}: applied, 3 of 3 failures"
    assert Failure.objects.get(pk=recent["by_a_later_rule"].pk).failure_type == FailureType.TEST_ENVIRONMENT


def test_a_new_rule_on_an_event_field_or_the_changed_files_previews_the_stored_event(api, qa):
    arm = report(api, job="deploy", log_excerpt="exit 1", runner="arm64-large")
    auth = report(api, job="deploy-2", log_excerpt="exit 1", changed_files=["README.md", "src/auth/jwt.py"])
    report(api, job="deploy-3", log_excerpt="exit 1", runner="x86-large", changed_files=["docs/index.md"])

    runner = create(qa, name="arm-runners", stage=30, field="event_field", event_field="runner", pattern="^arm64-",
                    failure_type=FailureType.CI_RUNNER, tags=[])  # fmt: skip
    files = create(qa, name="auth-paths", stage=30, field="changed_files", pattern=r"(^|/)auth/",
                   failure_type=FailureType.AUTH_CHANGE, tags=[])  # fmt: skip

    assert effects(runner) == {arm.pk: (FailureType.BUILD_ERROR, FailureType.CI_RUNNER, "arm-runners")}
    assert effects(files) == {auth.pk: (FailureType.BUILD_ERROR, FailureType.AUTH_CHANGE, "auth-paths")}
    assert files.effects.get().to_evidence == "src/auth/jwt.py"
