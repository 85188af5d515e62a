"""POST /api/v1/webhooks/github/{source}/: GitHub's real payloads, signed like GitHub signs them."""

import copy
import hashlib
import hmac
import itertools
import json

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from escalation.choices import FailureStatus, FailureType, Resolution
from escalation.models import CIJob, CIRun, Failure, FlakyObservation, Repository, WebhookDelivery, WebhookRun
from escalation.models.failures import TimelineKind
from escalation.services.failures import failure_fingerprint
from escalation.services.ingestion import EventInput, event_ingest
from escalation.services.sla import sla_due_at as sla_due
from portal.models import AuditAction, AuditEntry
from tests.escalation.ingest_support import (
    WEBHOOK_SECRET,
    error,
    fixture,
    fixture_json,
    github_post,
    ok,
    row_counts,
)

pytestmark = pytest.mark.django_db

CAT = "github-webhooks"
JOB_FAILURE = "octokit-webhooks__workflow_job.completed.failure.json"
JOB_SUCCESS = "octokit-webhooks__workflow_job.completed.success.json"
CHECK_RUN_FAILURE = "octokit-webhooks__check_run.completed.1.failure.json"
CHECK_SUITE = "octokit-webhooks__check_suite.completed.json"
RUN = "octokit-webhooks__workflow_run.completed.json"
RUN_WITH_PRS = "octokit-webhooks__workflow_run.completed.with-pull-requests.json"
CHECK_RUN_RERUN = "go-playground-webhooks__check-run.json"


@pytest.fixture
def client():
    return Client()


def one_failed_job() -> dict[str, dict]:
    """The four deliveries GitHub sends for one failed Actions job, made to describe the same job.

    The real payloads come from different repositories; the ids, names and commit of the
    workflow_job payload are carried into the other three, as GitHub would send them.
    """
    job_payload = fixture_json(CAT, JOB_FAILURE)
    job = job_payload["workflow_job"]
    repository = job_payload["repository"]
    suite_id = 1291536064
    check_run_id = int(job["check_run_url"].rsplit("/", 1)[1])

    check_run = fixture_json(CAT, CHECK_RUN_FAILURE)
    check_run["repository"] = repository
    check_run["check_run"].update(id=check_run_id, name=job["name"], head_sha=job["head_sha"])
    check_run["check_run"]["check_suite"].update(id=suite_id, head_branch=job["head_branch"], head_sha=job["head_sha"])

    suite = fixture_json(CAT, CHECK_SUITE)
    suite["repository"] = repository
    suite["check_suite"].update(
        id=suite_id, conclusion="failure", head_branch=job["head_branch"], head_sha=job["head_sha"]
    )

    run = fixture_json(CAT, RUN)
    run["repository"] = repository
    run["workflow_run"].update(
        id=job["run_id"], run_attempt=1, check_suite_id=suite_id, conclusion="failure",
        head_branch=job["head_branch"], head_sha=job["head_sha"],
    )  # fmt: skip
    return {"workflow_job": job_payload, "check_run": check_run, "check_suite": suite, "workflow_run": run}


def test_ping_is_answered(client, github_source):
    body = ok(github_post(client, "gh", "ping", {"zen": "Keep it logically awesome.", "hook_id": 1}), 200)
    assert body["status"] == "processed"
    assert body["pong"] is True


@pytest.mark.parametrize(
    ("signature", "detail"),
    [("", "missing"), ("sha256=" + "0" * 64, "does not match"), ("sha1=abc", "missing or not")],
    ids=["missing", "wrong", "sha1"],
)
def test_a_bad_signature_answers_401_and_stores_nothing(client, github_source, signature, detail):
    counts = row_counts()
    body = fixture(CAT, JOB_FAILURE)
    headers = {"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "d-1", "X-Hub-Signature-256": signature}
    response = client.generic(
        "POST", "/api/v1/webhooks/github/gh/", body, content_type="application/json", headers=headers
    )
    error(response, 401, "bad_signature", detail)
    assert row_counts() == counts


def test_a_body_signed_with_another_secret_answers_401(client, github_source):
    counts = row_counts()
    error(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE), secret="not-the-secret"), 401,
          "bad_signature")  # fmt: skip
    assert row_counts() == counts


def test_an_unknown_source_answers_404(client, github_source, gitlab_source):
    error(github_post(client, "nope", "ping", {}), 404, "unknown_source")
    error(github_post(client, "gl", "ping", {}), 404, "unknown_source")  # a GitLab source takes no GitHub hooks


def test_the_signature_is_checked_in_constant_time_over_the_raw_bytes(client, github_source):
    raw = fixture(CAT, JOB_FAILURE)  # the file's own formatting: re-serialising it would change the signature
    ok(github_post(client, "gh", "workflow_job", raw), 200)
    assert Failure.objects.count() == 1


@pytest.mark.parametrize("event", ["push", "pull_request", "deployment_status"])
def test_unsupported_event_kinds_answer_202_ignored_with_the_reason(client, github_source, event):
    body = ok(github_post(client, "gh", event, {"action": "opened"}), 202)
    assert body["status"] == "ignored"
    assert event in body["reason"]
    assert not Failure.objects.exists()


@pytest.mark.parametrize("action", ["queued", "in_progress", "requested", "rerequested"])
def test_actions_other_than_completed_answer_202_ignored(client, github_source, action):
    payload = fixture_json(CAT, JOB_FAILURE)
    payload["action"] = action
    body = ok(github_post(client, "gh", "workflow_job", payload), 202)
    assert action in body["reason"]
    assert not Failure.objects.exists()


def test_the_real_rerequested_neutral_check_run_is_ignored(client, github_source):
    payload = fixture_json(CAT, CHECK_RUN_RERUN)
    assert (payload["action"], payload["check_run"]["conclusion"]) == ("rerequested", "neutral")
    body = ok(github_post(client, "gh", "check_run", payload), 202)
    assert "rerequested" in body["reason"]


@pytest.mark.parametrize("conclusion", ["failure", "timed_out", "startup_failure", "action_required"])
def test_failing_conclusions_open_a_failure(client, github_source, conclusion):
    payload = fixture_json(CAT, JOB_FAILURE)
    payload["workflow_job"]["conclusion"] = conclusion
    body = ok(github_post(client, "gh", "workflow_job", payload), 200)
    failure = Failure.objects.get()
    job = payload["workflow_job"]
    assert body["jobs"][0]["failure"] == failure.pk
    assert failure.repository.name == payload["repository"]["full_name"]
    assert (failure.branch, failure.job_name) == (job["head_branch"], job["name"])
    assert failure.latest_run.run_id == str(job["run_id"])
    assert failure.latest_run.commit_sha == job["head_sha"]
    event = failure.occurrences.get().event
    failed_steps = [s["name"] for s in job["steps"] if s["conclusion"] == "failure"]
    assert event.step == failed_steps[0]
    assert event.job.runner_label == ",".join(job["labels"])


@pytest.mark.parametrize("conclusion", ["cancelled", "skipped", "neutral"])
def test_cancelled_skipped_and_neutral_open_nothing(client, github_source, conclusion):
    payload = fixture_json(CAT, JOB_FAILURE)
    payload["workflow_job"]["conclusion"] = conclusion
    body = ok(github_post(client, "gh", "workflow_job", payload), 202)
    assert conclusion in body["reason"]
    assert not Failure.objects.exists()


def test_success_resolves_the_jobs_open_failures_as_recovered(client, github_source):
    ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE)), 200)
    body = ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_SUCCESS)), 200)
    failure = Failure.objects.get()
    assert body["jobs"][0]["recovered"] == [failure.pk]
    assert (failure.status, failure.resolution) == (FailureStatus.RESOLVED, Resolution.RECOVERED)


def test_a_replayed_delivery_answers_the_first_answer_and_stores_nothing(client, github_source):
    first = ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE), delivery="abc-1"), 200)
    counts = row_counts()
    again = ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE), delivery="abc-1"), 200)
    assert again["duplicate"] is True
    assert again["jobs"] == first["jobs"]
    assert row_counts() == counts
    assert Failure.objects.get().occurrence_count == 1


def test_the_same_job_under_a_new_delivery_id_counts_once(client, github_source):
    ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE), delivery="one"), 200)
    body = ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE), delivery="two"), 200)
    assert body["jobs"][0]["duplicate"] is True
    assert Failure.objects.get().occurrence_count == 1
    assert WebhookDelivery.objects.count() == 2


def test_one_failed_job_reported_by_all_four_hooks_gives_exactly_one_failure(client, github_source):
    deliveries = one_failed_job()
    answers = {event: ok(github_post(client, "gh", event, payload), 200) for event, payload in deliveries.items()}
    failure = Failure.objects.get()
    assert failure.status == FailureStatus.OPEN
    assert failure.job_name == deliveries["workflow_job"]["workflow_job"]["name"]
    assert failure.occurrence_count == 1
    assert answers["check_run"]["jobs"][0]["duplicate"] is True
    assert "failed jobs are known" in answers["check_suite"]["run_level"]["detail"]
    assert "failed jobs are known" in answers["workflow_run"]["run_level"]["detail"]
    assert CIRun.objects.count() == 1


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))), ids=lambda o: "-".join(map(str, o)))
def test_in_any_order_the_four_hooks_leave_exactly_one_failure_the_jobs(client, github_source, order):
    deliveries = list(one_failed_job().items())
    for index in order:
        event, payload = deliveries[index]
        ok(github_post(client, "gh", event, payload), 200)
    assert Failure.objects.count() == 1
    failure = Failure.objects.get()
    assert failure.status == FailureStatus.OPEN
    assert failure.job_name == deliveries[0][1]["workflow_job"]["name"]


def test_a_failed_run_whose_jobs_are_unknown_opens_one_run_level_failure_that_its_job_replaces(client, github_source):
    deliveries = one_failed_job()
    body = ok(github_post(client, "gh", "workflow_run", deliveries["workflow_run"]), 200)
    run_level = Failure.objects.get()
    opened_at = run_level.first_seen_at
    workflow = deliveries["workflow_run"]["workflow"]["name"]  # workflow_run.name is "" in the real payload
    assert run_level.job_name == f"{workflow} (workflow run)"
    assert body["run_level"]["failure"] == run_level.pk
    ok(github_post(client, "gh", "check_suite", deliveries["check_suite"]), 200)
    assert Failure.objects.count() == 1  # the suite is the same run: no second run-level failure

    answer = ok(github_post(client, "gh", "workflow_job", deliveries["workflow_job"]), 200)
    job_name = deliveries["workflow_job"]["workflow_job"]["name"]
    failure = Failure.objects.get()
    assert failure.pk == run_level.pk
    assert (failure.status, failure.job_name, failure.first_seen_at) == (FailureStatus.OPEN, job_name, opened_at)
    assert answer["jobs"][0]["replaced_run_level"] == run_level.pk
    assert failure.fingerprint == failure_fingerprint(
        repository=failure.repository.name, branch=failure.branch, job=job_name, failure_type=failure.failure_type
    )
    assert failure.classification_event.job.name == job_name
    assert failure.matrix_snapshot["failure_type"] == failure.failure_type
    if failure.is_protected_branch:  # the SLA of the job's type, counted from the run-level opening
        team = failure.owner_team
        assert failure.sla_due_at == sla_due(snapshot=failure.matrix_snapshot, opened_at=opened_at, team=team)
    entry = failure.timeline.get(kind=TimelineKind.REPLACED_BY_JOB)
    assert entry.message.startswith(f"Replaced by job {job_name}")
    assert AuditEntry.objects.filter(object_id=str(failure.pk), action=AuditAction.UPDATE).exists()


def test_a_second_failed_job_of_the_run_opens_its_own_failure(client, github_source):
    deliveries = one_failed_job()
    ok(github_post(client, "gh", "workflow_run", deliveries["workflow_run"]), 200)
    ok(github_post(client, "gh", "workflow_job", deliveries["workflow_job"]), 200)
    other = copy.deepcopy(deliveries["workflow_job"])
    other["workflow_job"].update(id=other["workflow_job"]["id"] + 1, name="lint", check_run_url="")
    ok(github_post(client, "gh", "workflow_job", other), 200)
    assert sorted(Failure.objects.values_list("job_name", flat=True)) == sorted(
        ["lint", deliveries["workflow_job"]["workflow_job"]["name"]]
    )
    assert Failure.objects.filter(status=FailureStatus.OPEN).count() == 2


def test_a_run_level_failure_whose_job_is_already_open_resolves_as_superseded(client, github_source):
    deliveries = one_failed_job()
    job_name = deliveries["workflow_job"]["workflow_job"]["name"]
    earlier = copy.deepcopy(deliveries["workflow_job"])
    earlier["workflow_job"].update(id=1, run_id=1, check_run_url="")
    ok(github_post(client, "gh", "workflow_job", earlier), 200)  # the job's failure, open from an earlier run
    ok(github_post(client, "gh", "workflow_run", deliveries["workflow_run"]), 200)
    run_level = Failure.objects.exclude(job_name=job_name).get()

    answer = ok(github_post(client, "gh", "workflow_job", deliveries["workflow_job"]), 200)
    run_level.refresh_from_db()
    assert (run_level.status, run_level.resolution) == (FailureStatus.RESOLVED, Resolution.SUPERSEDED)
    assert answer["jobs"][0]["superseded"] == [run_level.pk]
    job_failure = Failure.objects.get(status=FailureStatus.OPEN)
    assert (job_failure.job_name, job_failure.occurrence_count) == (job_name, 2)


def test_a_passing_workflow_run_recovers_the_run_level_failure(client, github_source):
    deliveries = one_failed_job()
    ok(github_post(client, "gh", "workflow_run", deliveries["workflow_run"]), 200)
    passed = copy.deepcopy(deliveries["workflow_run"])
    passed["workflow_run"].update(id=passed["workflow_run"]["id"] + 1, conclusion="success", check_suite_id=7)
    body = ok(github_post(client, "gh", "workflow_run", passed), 200)
    failure = Failure.objects.get()
    assert body["run_level"]["recovered"] == [failure.pk]
    assert failure.resolution == Resolution.RECOVERED


@pytest.mark.parametrize("name", [RUN, RUN_WITH_PRS, CHECK_SUITE])
def test_the_real_successful_run_payloads_are_processed_and_open_nothing(client, github_source, name):
    payload = fixture_json(CAT, name)
    event = "check_suite" if "check_suite" in payload else "workflow_run"
    body = ok(github_post(client, "gh", event, payload), 200)
    assert body["status"] == "processed"
    assert "no run-level failure to recover" in body["run_level"]["detail"]
    assert not Failure.objects.exists()
    run = WebhookRun.objects.get()
    item = payload[event]
    assert run.repository == payload["repository"]["full_name"]
    assert run.run_id == (str(item["id"]) if event == "workflow_run" else f"check-suite-{item['id']}")
    assert not CIJob.objects.exists()  # a passed run with nothing to recover adds no stand-in job


def test_the_real_failed_check_run_opens_a_failure_on_its_suites_branch(client, github_source):
    payload = fixture_json(CAT, CHECK_RUN_FAILURE)
    ok(github_post(client, "gh", "check_run", payload), 200)
    failure = Failure.objects.get()
    check = payload["check_run"]
    assert failure.branch == check["check_suite"]["head_branch"]  # the check run has no head_branch of its own
    assert failure.job_name == check["name"]
    assert failure.failure_type == FailureType.BUILD_ERROR  # "linter": the default job-name rule for lint jobs
    assert failure.latest_run.run_id == f"check-suite-{check['check_suite']['id']}"


def test_the_repositorys_default_branch_from_the_payload_feeds_the_branch_policy(client, github_source):
    payload = fixture_json(CAT, JOB_FAILURE)
    payload["workflow_job"]["head_branch"] = "trunk"
    payload["repository"]["default_branch"] = "trunk"
    ok(github_post(client, "gh", "workflow_job", payload), 200)
    repository = Repository.objects.get(name=payload["repository"]["full_name"])
    assert repository.default_branch == "trunk"
    failure = Failure.objects.get()
    assert failure.is_protected_branch is True
    assert failure.sla_due_at is not None


def test_a_branch_that_is_not_the_default_is_recorded_but_never_escalated(client, github_source):
    payload = fixture_json(CAT, JOB_FAILURE)
    payload["workflow_job"]["head_branch"] = "feature/x"
    ok(github_post(client, "gh", "workflow_job", payload), 200)
    failure = Failure.objects.get()
    assert failure.is_protected_branch is False
    assert failure.sla_due_at is None


def rerun(payload: dict, attempt: int, job_id: int) -> dict:
    """The same job on a re-run: GitHub gives the attempt a new job (and check run) id."""
    payload = copy.deepcopy(payload)
    job = payload["workflow_job"]
    job.update(run_attempt=attempt, id=job_id)
    job["check_run_url"] = job["check_run_url"].rsplit("/", 1)[0] + f"/{job_id}"
    return payload


def test_a_job_that_fails_and_passes_on_a_rerun_of_the_same_commit_recovers_and_is_possibly_flaky(
    client, github_source
):
    ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE)), 200)
    body = ok(github_post(client, "gh", "workflow_job", rerun(fixture_json(CAT, JOB_SUCCESS), 2, 99)), 200)
    failure = Failure.objects.get()
    assert failure.resolution == Resolution.RECOVERED
    assert body["jobs"][0]["possibly_flaky"] is True
    observation = FlakyObservation.objects.get()
    assert observation.failure == failure
    assert observation.counts_for_statistics is True
    assert sorted(CIRun.objects.values_list("attempt", flat=True)) == [1, 2]  # attempts are tracked


def test_a_job_passing_on_another_commit_is_not_flaky(client, github_source):
    ok(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE)), 200)
    passed = rerun(fixture_json(CAT, JOB_SUCCESS), 1, 100)
    passed["workflow_job"].update(run_id=1, head_sha="f" * 40)
    ok(github_post(client, "gh", "workflow_job", passed), 200)
    assert Failure.objects.get().resolution == Resolution.RECOVERED
    assert not FlakyObservation.objects.exists()


def test_a_rerun_after_a_run_lost_mostly_to_infrastructure_is_left_out_of_flaky_statistics(client, github_source):
    payload = fixture_json(CAT, JOB_FAILURE)
    job = payload["workflow_job"]
    repository = payload["repository"]["full_name"]
    for name, log in [("e2e-a", "The runner has received a shutdown signal."),
                      ("e2e-b", "Error response from daemon: no space")]:  # fmt: skip
        event_ingest(
            ingest_source=github_source,
            data=EventInput(source="github", repository=repository, branch=job["head_branch"], commit=job["head_sha"],
                            run_id=str(job["run_id"]), attempt=1, job=name, status="failure", log_excerpt=log),
            now=timezone.now(),
        )  # fmt: skip
    ok(github_post(client, "gh", "workflow_job", payload), 200)
    ok(github_post(client, "gh", "workflow_job", rerun(fixture_json(CAT, JOB_SUCCESS), 2, 101)), 200)
    observation = FlakyObservation.objects.get()
    assert observation.counts_for_statistics is False
    assert "infrastructure" in observation.reason


def test_malformed_json_answers_400_and_stores_nothing(client, github_source):
    counts = row_counts()
    error(github_post(client, "gh", "workflow_job", b'{"action": "completed", "workflow_job": '), 400,
          "malformed_payload", "malformed JSON")  # fmt: skip
    assert row_counts() == counts


def test_a_payload_missing_a_required_field_answers_400_naming_it(client, github_source):
    payload = fixture_json(CAT, JOB_FAILURE)
    del payload["workflow_job"]["head_sha"]
    counts = row_counts()
    error(github_post(client, "gh", "workflow_job", payload), 400, "malformed_payload", "workflow_job.head_sha")
    assert row_counts() == counts


def test_a_missing_event_header_answers_400(client, github_source):
    body = fixture(CAT, JOB_FAILURE)
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.generic(
        "POST", "/api/v1/webhooks/github/gh/", body, content_type="application/json",
        headers={"X-Hub-Signature-256": signature},
    )  # fmt: skip
    error(response, 400, "malformed_payload", "X-GitHub-Event")


def test_a_nul_character_answers_400(client, github_source):
    payload = fixture_json(CAT, JOB_FAILURE)
    payload["workflow_job"]["name"] = "lint\u0000"
    error(github_post(client, "gh", "workflow_job", payload), 400, "nul_byte")
    assert not Failure.objects.exists()


@override_settings(PORTAL_MAX_WEBHOOK_BYTES=4096)
def test_a_body_over_the_webhook_limit_answers_413(client, github_source):
    error(github_post(client, "gh", "workflow_job", fixture(CAT, JOB_FAILURE)), 413, "payload_too_large")
    assert not Failure.objects.exists()


def test_githubs_form_encoded_payloads_are_accepted(client, github_source):
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(fixture_json(CAT, JOB_FAILURE))}).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.generic(
        "POST", "/api/v1/webhooks/github/gh/", body, content_type="application/x-www-form-urlencoded",
        headers={"X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "f-1", "X-Hub-Signature-256": signature},
    )  # fmt: skip
    ok(response, 200)
    assert Failure.objects.count() == 1
