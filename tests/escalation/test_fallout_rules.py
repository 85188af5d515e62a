"""Each default fallout rule as shipped (migration 0020): nothing below its threshold, one fallout at it, still
exactly one listing every trigger far above it; and what each detector counts and leaves out."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from escalation.choices import FailureType, FalloutCategory, FalloutScope, FalloutStatus, RuleChangeKind
from escalation.models import (
    CIJob,
    ClassificationRule,
    Failure,
    FailureOccurrence,
    Fallout,
    FalloutRule,
    FlakyObservation,
    Repository,
)
from escalation.services.fallout import DETECTORS, detect_patterns
from escalation.services.rule_changes import rule_change_apply, rule_change_submit
from portal.audit import Actor
from tests.escalation.fallout_support import (
    DOCKER_RATE_LIMIT,
    JUNIT_PASS,
    breached,
    failing_uploads,
    failure_ids,
    flaky_rounds,
    flaky_test_failures,
    green_history,
    job_run,
    reassigned,
    reported,
    rule_set,
)
from tests.escalation.ingest_support import fixture_json, github_post, gitlab_post, ok
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

BUILD_JOB = "build"


def _runner(api, n):
    return reported(api, n, type="ci_runner", runner="gh-large-x64")


def _pool(api, n):
    return reported(api, n, type="database_connectivity")


def _rate_limited(api, n):
    ids = reported(api, n, type="", log_excerpt=DOCKER_RATE_LIMIT)
    assert all("rate_limited" in tags for tags in Failure.objects.filter(pk__in=ids).values_list("tags", flat=True))
    return ids


def _sla(api, n):
    return breached(api, n, at=timezone.now() - timedelta(hours=1), type="unit_test")


def _generator(api, n):
    return reported(api, n, type="generator_drift")


def _slow_builds(api, n):
    repository, created = Repository.objects.get_or_create(name="acme/builds", defaults={"default_branch": "main"})
    now = timezone.now()
    if created:
        rule = FalloutRule.objects.get(code="build_performance")
        green_history(repository, BUILD_JOB, count=rule.min_samples, seconds=100, before=now)
    for minutes in range(n):
        job_run(repository, BUILD_JOB, finished_at=now - timedelta(minutes=minutes + 1), seconds=150)
    return []


# code: (adds n triggers and returns the failure ids made, the scope key they share)
BUILDERS = {
    "runner_hardening": (_runner, "gh-large-x64"),
    "connection_pool": (_pool, "global"),
    "scanner_rate_limits": (_rate_limited, "global"),
    "sla_misses": (_sla, "unit_test"),
    "cross_team_coordination": (reassigned, "global"),
    "flaky_test": (flaky_rounds, None),  # the test's key: repository:job:test hash
    "generator_complexity": (_generator, "global"),
    "build_performance": (_slow_builds, f"acme/builds:{BUILD_JOB}"),
}


def test_every_default_rule_has_a_detector_and_a_scenario_here():
    assert set(FalloutRule.objects.values_list("code", flat=True)) == set(DETECTORS) == set(BUILDERS)


@pytest.mark.parametrize("code", sorted(BUILDERS))
def test_a_rule_finds_nothing_below_its_threshold_one_fallout_at_it_and_still_one_far_above(code, api):
    rule = FalloutRule.objects.get(code=code)
    build, scope_key = BUILDERS[code]
    ids = set(build(api, rule.threshold - 1))
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule=rule).exists()

    ids |= set(build(api, 1))
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule=rule)
    assert (fallout.detail["count"], failure_ids(fallout)) == (rule.threshold, ids)
    if scope_key is not None:
        assert fallout.scope_key == scope_key

    ids |= set(build(api, rule.threshold * 2))
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule=rule)
    assert (fallout.detail["count"], failure_ids(fallout)) == (rule.threshold * 3, ids)
    expected = FalloutStatus.OPEN if rule.category == FalloutCategory.INFRASTRUCTURE else FalloutStatus.PROPOSED
    assert fallout.status == expected


# --- runner hardening ---


def test_runner_hardening_counts_each_report_of_one_failure_and_lists_the_failure_once(api):
    failure = report_failure(api, type="ci_runner", runner="gh-large-x64", job="deploy")
    for _ in range(2):
        assert report_failure(api, type="ci_runner", runner="gh-large-x64", job="deploy").pk == failure.pk
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="runner_hardening")
    assert (fallout.detail["count"], failure_ids(fallout), fallout.scope_key) == (3, {failure.pk}, "gh-large-x64")


def test_runner_hardening_counts_per_label_and_a_report_without_a_label_counts_nowhere(api):
    _runner(api, 2)
    reported(api, 2, type="ci_runner", runner="gl-shared")
    reported(api, 3, type="ci_runner", runner="")
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule__code="runner_hardening").exists()


def test_runner_hardening_leaves_out_reports_older_than_the_window(api):
    ids = _runner(api, 3)
    FailureOccurrence.objects.filter(failure_id=ids[0]).update(seen_at=timezone.now() - timedelta(hours=25))
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule__code="runner_hardening").exists()


# --- connection pool, scanner rate limits, generator complexity ---


def test_connection_pool_counts_every_repository_together_by_default(api):
    ids = [report_failure(api, type="database_connectivity", repository=f"acme/r{n}").pk for n in range(3)]
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="connection_pool")
    assert (fallout.scope_key, failure_ids(fallout), fallout.status) == ("global", set(ids), FalloutStatus.OPEN)


def test_scanner_rate_limits_ignore_failures_without_the_tag(api):
    _rate_limited(api, 1)
    reported(api, 3, type="ci_runner")
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule__code="scanner_rate_limits").exists()


@pytest.mark.parametrize("json_containment", [True, False], ids=["postgresql", "without JSON containment"])
def test_scanner_rate_limits_pick_the_tagged_failures_with_or_without_json_containment(
    api, json_containment, monkeypatch
):
    from django.db import connection

    monkeypatch.setattr(connection.features, "supports_json_field_contains", json_containment)  # SQLite: False
    ids = _rate_limited(api, 2)
    reported(api, 2, type="ci_runner")
    detect_patterns(now=timezone.now())
    assert failure_ids(Fallout.objects.get(rule__code="scanner_rate_limits")) == set(ids)


def test_generator_complexity_counts_failures_first_seen_in_the_window_only(api):
    ids = _generator(api, 3)
    Failure.objects.filter(pk=ids[0]).update(first_seen_at=timezone.now() - timedelta(days=8))
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule__code="generator_complexity").exists()


# --- SLA misses and cross-team coordination ---


def test_sla_misses_count_per_failure_type_within_the_window(api):
    now = timezone.now()
    breached(api, 2, at=now - timedelta(hours=1), type="unit_test")
    breached(api, 2, at=now - timedelta(hours=1), type="integration_test")
    breached(api, 1, at=now - timedelta(days=8), type="unit_test")
    detect_patterns(now=now)
    assert not Fallout.objects.filter(rule__code="sla_misses").exists()
    ids = breached(api, 1, at=now - timedelta(minutes=5), type="integration_test")
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="sla_misses")
    assert fallout.scope_key == FailureType.INTEGRATION_TEST
    assert ids[0] in failure_ids(fallout) and len(failure_ids(fallout)) == 3


def test_a_type_correction_records_the_teams_it_moved_the_failure_between(api):
    failure = Failure.objects.get(pk=reassigned(api, 1)[0])
    entry = failure.timeline.get(kind="type_corrected")
    assert entry.data["to_team"] == failure.owner_team_id
    assert entry.data["from_team"] not in (None, failure.owner_team_id)


def test_cross_team_counts_breaches_owned_by_two_teams_unless_acknowledged_before_the_breach(api):
    now = timezone.now()
    two_teams = breached(api, 2, at=now - timedelta(hours=2), type="unit_test")
    acknowledged_late = breached(api, 1, at=now - timedelta(hours=2), type="unit_test")
    Failure.objects.filter(pk__in=acknowledged_late).update(acknowledged_at=now - timedelta(hours=1))
    acknowledged_early = breached(api, 3, at=now - timedelta(hours=2), type="unit_test")
    Failure.objects.filter(pk__in=acknowledged_early).update(acknowledged_at=now - timedelta(hours=3))
    assert all(f.secondary_team_id not in (None, f.owner_team_id) for f in Failure.objects.all())
    detect_patterns(now=now)
    fallout = Fallout.objects.get(rule__code="cross_team_coordination")
    assert failure_ids(fallout) == set(two_teams + acknowledged_late)
    assert fallout.detail["breached_while_owned_by_two_teams"] == 3


def test_cross_team_adds_reassignments_and_breaches_together(api):
    moved = reassigned(api, 2)
    late = breached(api, 1, at=timezone.now() - timedelta(hours=1), type="unit_test")
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="cross_team_coordination")
    assert failure_ids(fallout) == set(moved + late)
    assert (fallout.detail["reassigned"], fallout.detail["breached_while_owned_by_two_teams"]) == (2, 1)


# --- flaky test ---


def test_flaky_observations_from_real_junit_reruns_propose_one_fallout_for_the_test(api):
    ids = flaky_rounds(api, 2)
    assert FlakyObservation.objects.count() == 2 and len(ids) == 2
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="flaky_test")
    assert failure_ids(fallout) == set(ids)
    assert fallout.title.endswith("test_rsh_events") and fallout.status == FalloutStatus.PROPOSED


def test_observations_from_runs_lost_to_infrastructure_do_not_count(api):
    flaky_rounds(api, 2)
    FlakyObservation.objects.update(counts_for_statistics=False)
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule__code="flaky_test").exists()


def test_a_test_failing_its_share_of_enough_runs_is_flaky_without_any_rerun(api):
    rule_set("flaky_test", min_samples=4)
    failing_uploads(api, 3)
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule__code="flaky_test").exists()  # 3 runs: too few for a share

    failing_uploads(api, 1)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="flaky_test")
    assert FlakyObservation.objects.count() == 0
    assert failure_ids(fallout) == set(flaky_test_failures())
    assert fallout.detail["failing_share"][0] | {"label": ""} == {"label": "", "runs": 4, "failed": 4, "percent": 100}


def test_a_failed_share_below_the_ratio_is_no_finding(api):
    rule_set("flaky_test", min_samples=4)
    failing_uploads(api, 1)
    failing_uploads(api, 3, body=JUNIT_PASS)  # 1 failed of 4: 25 % < 30 %
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule__code="flaky_test").exists()


# --- build performance ---


@pytest.fixture
def builds(api):
    return Repository.objects.create(name="acme/builds", default_branch="main")


def test_a_run_within_the_ratio_over_its_baseline_is_no_finding(builds):
    now = timezone.now()
    green_history(builds, BUILD_JOB, count=20, seconds=100, before=now)
    job_run(builds, BUILD_JOB, finished_at=now - timedelta(minutes=1), seconds=119)
    detect_patterns(now=now)
    assert not Fallout.objects.filter(rule__code="build_performance").exists()


def test_without_enough_green_runs_there_is_no_baseline_and_no_finding(builds):
    now = timezone.now()
    green_history(builds, BUILD_JOB, count=19, seconds=100, before=now)
    for _ in range(5):
        job_run(builds, BUILD_JOB, finished_at=now - timedelta(hours=30), seconds=100, status="failure")
    job_run(builds, BUILD_JOB, finished_at=now - timedelta(minutes=1), seconds=500)
    detect_patterns(now=now)
    assert not Fallout.objects.filter(rule__code="build_performance").exists()


def test_a_slow_default_branch_run_is_reported_with_its_duration_and_baseline(builds):
    now = timezone.now()
    green_history(builds, BUILD_JOB, count=20, seconds=100, before=now)
    job_run(builds, BUILD_JOB, finished_at=now - timedelta(hours=2), seconds=400, branch="feature/slow")
    slow = job_run(builds, BUILD_JOB, finished_at=now - timedelta(minutes=1), seconds=130)
    detect_patterns(now=now)
    fallout = Fallout.objects.get(rule__code="build_performance")
    assert (fallout.scope_key, fallout.status, failure_ids(fallout)) == ("acme/builds:build", "proposed", set())
    [run] = fallout.detail["slow_runs"]
    assert (run["run"], run["duration_seconds"], run["baseline_seconds"]) == (slow.run.run_id, 130.0, 100.0)
    assert run["over_baseline_percent"] == 30.0


def test_only_runs_on_the_repositorys_default_branch_are_measured(builds):
    now = timezone.now()
    Repository.objects.filter(pk=builds.pk).update(default_branch="trunk")
    green_history(builds, BUILD_JOB, count=20, seconds=100, before=now)  # on main: not the default branch now
    job_run(builds, BUILD_JOB, finished_at=now - timedelta(minutes=1), seconds=300)
    detect_patterns(now=now)
    assert not Fallout.objects.filter(rule__code="build_performance").exists()
    assert CIJob.objects.filter(run__branch="main").count() == 21


def test_each_detector_declares_the_scopes_it_supports_and_the_defaults_are_among_them():
    for rule in FalloutRule.objects.all():
        assert rule.scope in DETECTORS[rule.code].scopes
        assert set(DETECTORS[rule.code].scopes) <= set(FalloutScope.values)


# --- runner labels: every ingestion path fills them ---


def test_the_events_api_stores_the_runner_label_on_the_job(api):
    failure = report_failure(api, type="ci_runner", runner="self-hosted-arm64")
    assert CIJob.objects.get(events__occurrence__failure=failure).runner_label == "self-hosted-arm64"


def test_a_real_github_workflow_job_stores_its_runner_labels(api, github_source):
    payload = fixture_json("github-webhooks", "octokit-webhooks__workflow_job.completed.failure.json")
    ok(github_post(Client(), "gh", "workflow_job", payload), 200)
    labels = payload["workflow_job"]["labels"]
    assert CIJob.objects.get(name=payload["workflow_job"]["name"]).runner_label == ",".join(labels)


def test_a_real_gitlab_pipeline_stores_each_jobs_runner(api, gitlab_source):
    payload = fixture_json("gitlab-webhooks", "gitlab4j-api__pipeline-event.json")
    ok(gitlab_post(Client(), "gl", payload), 200)
    expected = {
        b["name"]: b["runner"]["description"] for b in payload["builds"] if b["status"] in ("failed", "success")
    }
    assert dict(CIJob.objects.values_list("name", "runner_label")) == expected


def test_a_rule_change_reclassification_records_the_teams_and_counts_as_a_reassignment(api):
    failure = report_failure(
        api, type="", job="deploy", log_excerpt="write /var/lib/docker/tmp/x: no space left on device"
    )
    assert failure.failure_type == FailureType.CI_RUNNER
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    change = rule_change_submit(
        kind=RuleChangeKind.UPDATE, rule=rule, proposed={"pattern": "(ENOSPC)"}, actor=Actor.task("test"),
        now=timezone.now(),
    )  # fmt: skip
    rule_change_apply(change_id=change.pk, actor=Actor.task("test"), now=timezone.now())
    failure.refresh_from_db()
    entry = failure.timeline.get(kind="reclassified")
    assert failure.failure_type != FailureType.CI_RUNNER
    assert entry.data["to_team"] == failure.owner_team_id != entry.data["from_team"]
    rule_set("cross_team_coordination", threshold=1)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="cross_team_coordination")
    assert (failure_ids(fallout), fallout.detail["reassigned"]) == ({failure.pk}, 1)
