"""POST /api/v1/webhooks/gitlab/{source}/: GitLab's real Pipeline, Job and Build Hook payloads."""

import copy

import pytest
from django.test import Client

from escalation.choices import FailureStatus, JobStatus
from escalation.models import CIEvent, CIJob, CIRun, Failure, Repository, WebhookDelivery
from tests.escalation.ingest_support import error, fixture, fixture_json, gitlab_post, ok, row_counts

pytestmark = pytest.mark.django_db

CAT = "gitlab-webhooks"
PIPELINE_GITLAB4J = "gitlab4j-api__pipeline-event.json"
PIPELINE_GO = "go-playground-webhooks__pipeline-event.json"
PIPELINE_XANZY = "xanzy-go-gitlab__pipeline.json"
JOB_GO = "go-playground-webhooks__job-event.json"
JOB_XANZY = "xanzy-go-gitlab__job.json"
BUILD_XANZY = "xanzy-go-gitlab__build.json"


@pytest.fixture
def client():
    return Client()


def finished(builds: list[dict]) -> dict[str, list[dict]]:
    """The builds of a pipeline payload by final status, counted from the payload itself."""
    return {
        "failed": [b for b in builds if b["status"] == "failed"],
        "success": [b for b in builds if b["status"] == "success"],
        "other": [b for b in builds if b["status"] not in ("failed", "success")],
    }


@pytest.mark.parametrize("token", ["", "wrong-token-value"], ids=["missing", "wrong"])
def test_a_missing_or_wrong_token_answers_401_and_stores_nothing(client, gitlab_source, token):
    counts = row_counts()
    error(gitlab_post(client, "gl", fixture_json(CAT, PIPELINE_GITLAB4J), token=token), 401, "bad_signature")
    assert row_counts() == counts


@pytest.mark.parametrize("name", [PIPELINE_GITLAB4J, PIPELINE_GO, PIPELINE_XANZY])
def test_each_real_pipeline_hook_records_its_finished_jobs(client, gitlab_source, name):
    payload = fixture_json(CAT, name)
    builds = finished(payload["builds"])
    body = ok(gitlab_post(client, "gl", payload), 200)
    attrs = payload["object_attributes"]
    run = CIRun.objects.get()
    assert (run.run_id, run.branch, run.commit_sha) == (str(attrs["id"]), attrs["ref"], attrs["sha"])
    assert run.repository.name == payload["project"]["path_with_namespace"]
    assert run.commit_author == payload["commit"]["author"]["email"]
    assert len(body["jobs"]) == len(builds["failed"]) + len(builds["success"])
    assert body["jobs_not_finished"] == len(builds["other"])
    opened = [b for b in builds["failed"] if not b["allow_failure"]]
    assert sorted(Failure.objects.values_list("job_name", flat=True)) == sorted(b["name"] for b in opened)
    assert set(CIJob.objects.values_list("name", flat=True)) == {
        b["name"] for b in builds["failed"] + builds["success"]
    }


def test_the_gitlab4j_pipeline_reports_its_failed_build_although_the_pipeline_says_success(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_GITLAB4J)
    failed = [b for b in payload["builds"] if b["status"] == "failed"]
    assert payload["object_attributes"]["status"] == "success" and len(failed) == 1
    ok(gitlab_post(client, "gl", payload), 200)
    failure = Failure.objects.get()
    assert failure.job_name == failed[0]["name"]
    assert failure.occurrences.get().event.log_excerpt == f"failure_reason: {failed[0]['failure_reason']}"


def test_the_projects_default_branch_feeds_the_branch_policy(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_GITLAB4J)
    ok(gitlab_post(client, "gl", payload), 200)
    repository = Repository.objects.get(name=payload["project"]["path_with_namespace"])
    assert repository.default_branch == payload["project"]["default_branch"]


def test_a_job_reported_by_both_hooks_counts_once(client, gitlab_source):
    pipeline = fixture_json(CAT, PIPELINE_GITLAB4J)
    failed = next(b for b in pipeline["builds"] if b["status"] == "failed")
    job = fixture_json(CAT, JOB_GO)  # the same project (gitlab-org/gitlab-test) and the Job Hook's shape
    attrs = pipeline["object_attributes"]
    job.update(build_id=failed["id"], build_name=failed["name"], build_status="failed", pipeline_id=attrs["id"],
               ref=attrs["ref"], sha=attrs["sha"])  # fmt: skip
    ok(gitlab_post(client, "gl", pipeline), 200)
    body = ok(gitlab_post(client, "gl", job), 200)
    assert body["jobs"][0]["duplicate"] is True
    failure = Failure.objects.get()
    assert failure.occurrence_count == 1
    assert CIEvent.objects.filter(status=JobStatus.FAILURE).count() == 1


def test_a_job_with_allow_failure_is_recorded_but_opens_nothing(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_XANZY)
    allowed = next(b for b in payload["builds"] if b["allow_failure"])
    allowed["status"] = "failed"  # the real payload's allowed job was skipped; here it ran and failed
    body = ok(gitlab_post(client, "gl", payload), 200)
    answer = next(j for j in body["jobs"] if j["job"] == allowed["name"])
    assert "allow_failure" in answer["recorded_only"]
    assert CIJob.objects.get(name=allowed["name"]).status == JobStatus.FAILURE
    assert not Failure.objects.exists()


def test_a_failed_pipeline_with_no_failed_job_opens_a_run_level_failure_its_job_replaces(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_GO)
    payload["object_attributes"]["status"] = "failed"
    assert not [b for b in payload["builds"] if b["status"] == "failed"]
    body = ok(gitlab_post(client, "gl", payload), 200)
    run_level = Failure.objects.get()
    assert run_level.job_name == f"{payload['object_attributes']['name']} (pipeline)"
    assert body["run_level"]["failure"] == run_level.pk

    job = fixture_json(CAT, JOB_GO)
    attrs = payload["object_attributes"]
    job.update(build_status="failed", pipeline_id=attrs["id"], ref=attrs["ref"], sha=attrs["sha"])  # its pipeline's
    answer = ok(gitlab_post(client, "gl", job), 200)
    assert Failure.objects.count() == 1
    failure = Failure.objects.get()
    assert (failure.pk, failure.status, failure.job_name) == (run_level.pk, FailureStatus.OPEN, job["build_name"])
    assert failure.first_seen_at == run_level.first_seen_at
    assert answer["jobs"][0]["replaced_run_level"] == run_level.pk
    assert failure.timeline.filter(message__startswith=f"Replaced by job {job['build_name']}").exists()


def test_a_failed_pipeline_whose_failed_jobs_are_known_opens_no_run_level_failure(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_GITLAB4J)
    payload["object_attributes"]["status"] = "failed"
    body = ok(gitlab_post(client, "gl", payload), 200)
    assert "failed jobs are known" in body["run_level"]["detail"]
    assert Failure.objects.count() == 1


def test_the_event_uuid_header_dedups_a_replayed_delivery(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_GITLAB4J)
    first = ok(gitlab_post(client, "gl", payload, delivery="5f1b-uuid"), 200)
    counts = row_counts()
    again = ok(gitlab_post(client, "gl", payload, delivery="5f1b-uuid"), 200)
    assert again["duplicate"] is True and again["jobs"] == first["jobs"]
    assert row_counts() == counts


def test_without_a_uuid_the_job_ids_and_status_dedup(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_GITLAB4J)
    ok(gitlab_post(client, "gl", payload), 200)
    changed = copy.deepcopy(payload)
    changed["object_attributes"]["duration"] = 99  # another delivery of the same pipeline and jobs
    body = ok(gitlab_post(client, "gl", changed), 200)
    assert all(job.get("duplicate", True) for job in body["jobs"])
    assert Failure.objects.get().occurrence_count == 1
    assert WebhookDelivery.objects.count() == 2


def test_a_failed_job_hook_opens_a_failure_and_its_success_recovers_it(client, gitlab_source):
    job = fixture_json(CAT, JOB_XANZY)
    assert job["build_status"] == "success" and job["build_failure_reason"] == "unknown_failure"
    failed = copy.deepcopy(job)
    failed.update(build_status="failed", build_id=job["build_id"] - 1)
    ok(gitlab_post(client, "gl", failed), 200)
    failure = Failure.objects.get()
    assert failure.job_name == job["build_name"]
    assert failure.repository.name == "jsmithy2/release-tools-fake"  # from repository.homepage
    body = ok(gitlab_post(client, "gl", job), 200)
    assert body["jobs"][0]["recovered"] == [failure.pk]


@pytest.mark.parametrize("name", [JOB_GO, BUILD_XANZY])
def test_a_job_hook_that_has_not_finished_answers_202_ignored(client, gitlab_source, name):
    payload = fixture_json(CAT, name)
    body = ok(gitlab_post(client, "gl", payload), 202)
    assert payload["build_status"] in body["reason"]
    assert not CIRun.objects.exists()


def test_the_job_key_variant_is_read_like_the_build_keys(client, gitlab_source):
    payload = fixture_json(CAT, JOB_XANZY)
    renamed = {(f"job_{k[6:]}" if k.startswith("build_") else k): v for k, v in payload.items()}
    renamed["object_kind"] = "build"
    renamed["job_status"] = "failed"
    ok(gitlab_post(client, "gl", renamed, event="Job Hook"), 200)
    assert Failure.objects.get().job_name == payload["build_name"]


def test_the_older_build_hook_event_name_is_accepted(client, gitlab_source):
    payload = fixture_json(CAT, BUILD_XANZY)
    payload["build_status"] = "failed"
    ok(gitlab_post(client, "gl", payload, event="Build Hook"), 200)
    failure = Failure.objects.get()
    assert failure.repository.name == "gitlab-org/gitlab-test"
    assert failure.latest_run.run_id == str(payload["pipeline_id"])


@pytest.mark.parametrize("kind", ["push", "merge_request", "note"])
def test_other_hooks_answer_202_ignored_with_the_reason(client, gitlab_source, kind):
    body = ok(gitlab_post(client, "gl", {"object_kind": kind}), 202)
    assert kind in body["reason"]


def test_a_payload_missing_a_required_field_answers_400_and_stores_nothing(client, gitlab_source):
    payload = fixture_json(CAT, PIPELINE_GITLAB4J)
    del payload["object_attributes"]["sha"]
    counts = row_counts()
    error(gitlab_post(client, "gl", payload), 400, "malformed_payload", "object_attributes.sha")
    assert row_counts() == counts


def test_a_body_that_is_not_json_answers_400(client, gitlab_source):
    error(gitlab_post(client, "gl", fixture(CAT, PIPELINE_GO)[:200]), 400, "malformed_payload", "malformed JSON")
    assert not CIRun.objects.exists()
