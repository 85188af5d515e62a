"""Retry advice (issue 7): POST /api/v1/retry-advice/ answers from the matrix row's retry policy."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from escalation.choices import ChangeSource, FailureType, Resolution, RetryCondition, Scope
from escalation.models import MatrixRow, RetryAdvice
from escalation.services.failures import failures_resolve
from escalation.services.sources import source_create
from portal.audit import Actor
from tests.concurrency import run_together
from tests.factories import event_body, report_failure

pytestmark = pytest.mark.django_db

URL = "/api/v1/retry-advice/"
QUESTION = {"repository": "acme/shop", "job": "build", "attempt": 1}
BACKOFF = [30, 60, 120]  # ci_runner and test_environment: 30 s doubling, 3 retries


def ask(api: Client, headers: dict | None = None, **fields):
    return api.post(URL, {**QUESTION, **fields}, content_type="application/json", headers=headers or {})


def advised(api: Client, **fields) -> dict:
    response = ask(api, **fields)
    assert response.status_code == 201, response.content
    return response.json()


def post_event(api: Client, **fields) -> dict:
    response = api.post("/api/v1/events/", event_body(**fields), content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


def token(*scopes: str, name: str = "narrow") -> str:
    _, value = source_create(name=name, scopes=list(scopes), actor=Actor.task("test"), now=timezone.now())
    return value


# --- ci_runner and test_environment: up to 3 retries, exponential backoff ---


@pytest.mark.parametrize("failure_type", [FailureType.CI_RUNNER, FailureType.TEST_ENVIRONMENT])
@pytest.mark.parametrize(("attempt", "delay"), [(1, 30), (2, 60), (3, 120)])
def test_infrastructure_types_are_retried_three_times_with_doubling_delays(api, failure_type, attempt, delay):
    answer = advised(api, failure_type=failure_type, attempt=attempt)
    assert (answer["retry"], answer["delay_seconds"], answer["max_attempts"]) == (True, delay, 3)
    assert f"attempt {attempt} of 3" in answer["reason"]


@pytest.mark.parametrize("failure_type", [FailureType.CI_RUNNER, FailureType.TEST_ENVIRONMENT])
def test_the_fourth_attempt_is_refused_because_the_retries_are_used_up(api, failure_type):
    answer = advised(api, failure_type=failure_type, attempt=4)
    assert (answer["retry"], answer["delay_seconds"], answer["max_attempts"]) == (False, 0, 3)
    assert "attempt 4 of 3" in answer["reason"]


# --- database_connectivity: 2 retries, only while the run's other jobs succeed ---

DB = {"failure_type": FailureType.DATABASE_CONNECTIVITY, "job": "db-migrate", "run_id": "7001"}
GREEN = [{"name": "lint", "status": "success"}, {"name": "unit-tests", "status": "success"}]


@pytest.mark.parametrize(("attempt", "delay"), [(1, 30), (2, 60)])
def test_database_connectivity_is_retried_while_the_other_jobs_succeed(api, attempt, delay):
    answer = advised(api, **DB, attempt=attempt, other_jobs=GREEN)
    assert (answer["retry"], answer["delay_seconds"], answer["max_attempts"]) == (True, delay, 2)
    assert "other jobs succeeded (as given)" in answer["reason"]


def test_database_connectivity_is_not_retried_a_third_time(api):
    answer = advised(api, **DB, attempt=3, other_jobs=GREEN)
    assert (answer["retry"], answer["max_attempts"]) == (False, 2)
    assert "attempt 3 of 2" in answer["reason"]


def test_database_connectivity_is_not_retried_when_another_job_failed_and_names_it(api):
    other_jobs = [*GREEN, {"name": "e2e", "status": "failure"}]
    answer = advised(api, **DB, other_jobs=other_jobs)
    assert (answer["retry"], answer["delay_seconds"]) == (False, 0)
    assert "failed" in answer["reason"] and "e2e" in answer["reason"]
    assert "lint" not in answer["reason"]
    assert RetryAdvice.objects.get().other_jobs == other_jobs


def test_database_connectivity_with_the_other_jobs_unknown_is_not_retried_and_asks_for_them(api):
    answer = advised(api, **DB)
    assert answer["retry"] is False
    assert "unknown" in answer["reason"] and "send other_jobs" in answer["reason"]


def test_an_empty_other_jobs_list_is_no_evidence_either(api):
    answer = advised(api, **DB, other_jobs=[])
    assert answer["retry"] is False
    assert "send other_jobs" in answer["reason"]


def test_the_job_itself_in_other_jobs_does_not_count_as_another_job(api):
    answer = advised(api, **DB, other_jobs=[{"name": "db-migrate", "status": "failure"}, *GREEN])
    assert answer["retry"] is True


def test_the_job_itself_alone_in_other_jobs_leaves_the_other_jobs_unknown(api):
    answer = advised(api, **DB, other_jobs=[{"name": "db-migrate", "status": "failure"}])
    assert answer["retry"] is False
    assert "send other_jobs" in answer["reason"]


def test_database_connectivity_takes_the_other_jobs_from_the_stored_run_when_none_are_given(api):
    post_event(api, run_id="7001", job="db-migrate", type="database_connectivity", log_excerpt="")
    post_event(api, run_id="7001", job="unit-tests", status="success")
    post_event(api, run_id="7001", job="lint", status="success")
    answer = advised(api, **DB)
    assert answer["retry"] is True
    assert "as stored for run 7001 attempt 1" in answer["reason"]
    assert RetryAdvice.objects.get().other_jobs == [
        {"name": "lint", "status": "success"},
        {"name": "unit-tests", "status": "success"},
    ]


def test_a_failed_job_stored_for_the_run_refuses_the_retry_and_is_named(api):
    post_event(api, run_id="7001", job="db-migrate", type="database_connectivity", log_excerpt="")
    post_event(api, run_id="7001", job="unit-tests", status="success")
    post_event(api, run_id="7001", job="e2e", log_excerpt="boom")
    answer = advised(api, **DB)
    assert answer["retry"] is False
    assert "e2e" in answer["reason"] and "unit-tests" not in answer["reason"]


def test_the_stored_jobs_come_from_the_runs_latest_attempt(api):
    post_event(api, run_id="7001", attempt=1, job="e2e", log_excerpt="boom")
    post_event(api, run_id="7001", attempt=2, job="e2e", status="success")
    post_event(api, run_id="7001", attempt=2, job="db-migrate", type="database_connectivity", log_excerpt="")
    answer = advised(api, **DB)
    assert answer["retry"] is True
    assert "attempt 2" in answer["reason"]


def test_stored_jobs_of_the_same_run_id_in_another_repository_do_not_count(api):
    post_event(api, repository="acme/billing", run_id="7001", job="unit-tests", status="success")
    answer = advised(api, **DB)
    assert answer["retry"] is False
    assert "send other_jobs" in answer["reason"]


def test_given_other_jobs_win_over_the_stored_ones(api):
    post_event(api, run_id="7001", job="e2e", log_excerpt="boom")
    answer = advised(api, **DB, other_jobs=GREEN)
    assert answer["retry"] is True


# --- performance_regression: 1 retry, only while infrastructure is healthy ---

PERF = {"failure_type": FailureType.PERFORMANCE_REGRESSION, "job": "benchmarks"}


def test_a_performance_regression_is_retried_once_while_no_infrastructure_failure_is_open(api):
    answer = advised(api, **PERF)
    assert (answer["retry"], answer["delay_seconds"], answer["max_attempts"]) == (True, 60, 1)
    assert "no open infrastructure failure on acme/shop" in answer["reason"]
    assert "attempt 2 of 1" in advised(api, **PERF, attempt=2)["reason"]


@pytest.mark.parametrize("infrastructure_type", ["ci_runner", "database_connectivity", "test_environment"])
def test_an_open_infrastructure_failure_on_the_repository_refuses_the_retry_and_is_named(api, infrastructure_type):
    infrastructure = report_failure(api, job="deploy", type=infrastructure_type)
    answer = advised(api, **PERF)
    assert (answer["retry"], answer["delay_seconds"], answer["max_attempts"]) == (False, 0, 1)
    assert f"#{infrastructure.id} ({infrastructure_type})" in answer["reason"]


def test_an_infrastructure_failure_on_another_repository_does_not_count(api):
    report_failure(api, repository="acme/billing", job="deploy", type="ci_runner")
    assert advised(api, **PERF)["retry"] is True


def test_a_resolved_infrastructure_failure_does_not_count(api):
    infrastructure = report_failure(api, job="deploy", type="ci_runner")
    post_event(api, job="deploy", status="success")  # the same job green again recovers it
    infrastructure.refresh_from_db()
    assert infrastructure.status == "resolved"
    assert advised(api, **PERF)["retry"] is True


def test_an_open_failure_of_another_kind_is_no_infrastructure_trouble(api):
    report_failure(api, job="unit-tests", type="unit_test")
    assert advised(api, **PERF)["retry"] is True


# --- never ---

NEVER = [
    FailureType.UNIT_TEST,
    FailureType.INTEGRATION_TEST,
    FailureType.DATABASE_TEST,
    FailureType.SECRET_DETECTED,
    FailureType.VULNERABILITY_CRITICAL,
    FailureType.VULNERABILITY_HIGH,
    FailureType.VULNERABILITY_MEDIUM,
    FailureType.GENERATOR_DRIFT,
    FailureType.BUILD_ERROR,
    FailureType.AUTH_CHANGE,
]


@pytest.mark.parametrize("failure_type", NEVER)
def test_tests_security_findings_secrets_drift_builds_and_auth_are_never_retried(api, failure_type):
    answer = advised(api, failure_type=failure_type, other_jobs=GREEN)
    assert (answer["retry"], answer["delay_seconds"], answer["max_attempts"]) == (False, 0, 0)
    assert answer["reason"] == f"{failure_type} failures are never retried (the matrix row allows no retries)"


def test_every_failure_type_is_covered_by_the_tests_above():
    retried = {FailureType.CI_RUNNER, FailureType.TEST_ENVIRONMENT, FailureType.DATABASE_CONNECTIVITY,
               FailureType.PERFORMANCE_REGRESSION}  # fmt: skip
    assert retried | set(NEVER) == set(FailureType)
    assert set(MatrixRow.objects.filter(retries=0).values_list("failure_type", flat=True)) == set(NEVER)


# --- a log excerpt, classified by the same rules as ingestion ---

LOG_LINES = [  # verbatim lines from tests/data/classification/log_lines.yaml
    ("write /var/lib/docker/tmp/GetImageBlob812: no space left on device", "ci_runner"),
    (
        "The runner has received a shutdown signal. This can happen when the runner service is stopped, "
        "or a manually started runner is canceled.",
        "ci_runner",
    ),
    (
        "redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379. Connection refused.",
        "test_environment",
    ),
    (
        'psycopg.OperationalError: connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused",
        "database_connectivity",
    ),
]


@pytest.mark.parametrize(("line", "failure_type"), LOG_LINES)
def test_a_log_excerpt_is_classified_by_the_rules_ingestion_uses(api, line, failure_type):
    log = f"Step 4/9 : RUN make\n{line}\nError: Process completed with exit code 1."
    answer = advised(api, job="build", run_id="8001", log_excerpt=log, other_jobs=GREEN)
    ingested = report_failure(api, job="build", log_excerpt=log, type="")
    assert answer["failure_type"] == ingested.failure_type == failure_type
    assert answer["classified_by"] == ingested.classified_by
    assert answer["retry"] is True


def test_a_log_line_of_a_never_type_is_refused(api):
    log = "FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4\n1 failed, 41 passed in 2.1s"
    answer = advised(api, job="unit-tests", log_excerpt=log)
    assert (answer["failure_type"], answer["retry"]) == ("unit_test", False)


def test_an_excerpt_no_rule_matches_is_the_fallback_type_and_is_not_retried(api):
    answer = advised(api, job="make-coffee", log_excerpt="the kettle is cold")
    assert (answer["failure_type"], answer["classified_by"], answer["retry"]) == ("build_error", "fallback", False)
    assert answer["reason"].startswith("no classification rule matched")


def test_a_given_failure_type_wins_over_the_log_excerpt(api):
    answer = advised(api, failure_type="unit_test", log_excerpt="no space left on device")
    assert (answer["failure_type"], answer["classified_by"], answer["retry"]) == ("unit_test", "failure_type", False)


def test_the_step_takes_part_in_the_classification(api):
    without = advised(api, job="make-coffee", log_excerpt="exit code 1")
    with_step = advised(api, job="make-coffee", step="Run integration tests", log_excerpt="exit code 1")
    assert without["classified_by"] == "fallback"
    assert (with_step["failure_type"], with_step["classified_by"]) == ("integration_test", "step-integration-test")


# --- the matrix row: the current one, or the failure's snapshot ---


def test_a_matrix_edit_changes_the_answer_for_new_failures(api):
    MatrixRow.objects.filter(failure_type="ci_runner").update(
        retries=1, retry_backoff_seconds=10, retry_condition=RetryCondition.NONE
    )
    first = advised(api, failure_type="ci_runner", attempt=1)
    assert (first["retry"], first["delay_seconds"], first["max_attempts"]) == (True, 10, 1)
    assert "attempt 2 of 1" in advised(api, failure_type="ci_runner", attempt=2)["reason"]


def test_a_matrix_condition_edit_applies_to_new_failures(api):
    MatrixRow.objects.filter(failure_type="ci_runner").update(retry_condition=RetryCondition.INFRASTRUCTURE_HEALTHY)
    other = report_failure(api, job="deploy", type="test_environment")
    answer = advised(api, failure_type="ci_runner", job="build")
    assert answer["retry"] is False and f"#{other.id}" in answer["reason"]


def test_an_open_failure_keeps_the_retry_policy_of_its_snapshot(api):
    failure = report_failure(api, job="build", type="ci_runner")
    MatrixRow.objects.filter(failure_type="ci_runner").update(retries=0)
    answer = advised(api, failure_type="ci_runner", job="build", branch="main", attempt=3)
    assert (answer["failure"], answer["retry"], answer["delay_seconds"]) == (failure.id, True, 120)
    fresh = advised(api, failure_type="ci_runner", job="build", branch="feature/x", attempt=1)
    assert (fresh["failure"], fresh["retry"]) == (None, False)


# --- the failure it concerns: recorded and counted ---


def test_each_answer_is_recorded_and_counted_on_the_open_failure(api):
    failure = report_failure(api, job="build", type="ci_runner", run_id="9001")
    yes = advised(api, failure_type="ci_runner", branch="main", run_id="9001", attempt=1)
    no = advised(api, failure_type="ci_runner", branch="main", run_id="9001", attempt=4)
    failure.refresh_from_db()
    assert (failure.retry_advice_count, failure.retries_advised) == (2, 1)
    assert yes["failure"] == no["failure"] == failure.id
    advice = RetryAdvice.objects.get(pk=yes["id"])
    assert (advice.failure_id, advice.repository, advice.branch, advice.run_id, advice.job_name) == (
        failure.id, "acme/shop", "main", "9001", "build",
    )  # fmt: skip
    assert (advice.failure_type, advice.classified_by, advice.attempt) == ("ci_runner", "failure_type", 1)
    assert (advice.retry, advice.delay_seconds, advice.max_attempts) == (True, 30, 3)
    assert advice.source.name == "ci" and advice.reason == yes["reason"]


def test_without_a_branch_the_open_failure_of_the_repository_job_and_type_is_found(api):
    failure = report_failure(api, job="build", type="ci_runner", branch="release/2.0")
    assert advised(api, failure_type="ci_runner")["failure"] == failure.id


def test_an_open_failure_of_another_branch_type_or_job_is_not_the_one(api):
    report_failure(api, job="build", type="ci_runner", branch="develop")
    report_failure(api, job="build", type="unit_test")
    report_failure(api, job="deploy", type="ci_runner")
    assert advised(api, failure_type="ci_runner", branch="main")["failure"] is None


def test_a_resolved_failure_of_the_job_in_the_run_is_the_one_when_none_is_open(api, qa_analyst):
    failure = report_failure(api, job="build", type="ci_runner", run_id="9002")
    actor = Actor.of_user(qa_analyst, ChangeSource.ADMIN)
    failures_resolve(failure_ids=[failure.id], resolution=Resolution.FIXED, actor=actor, now=timezone.now())
    assert advised(api, failure_type="ci_runner", branch="main", run_id="9002")["failure"] == failure.id
    assert advised(api, failure_type="ci_runner", branch="main", run_id="9003")["failure"] is None
    failure.refresh_from_db()
    assert (failure.retry_advice_count, failure.retries_advised) == (1, 1)


def test_an_answer_without_a_failure_is_recorded_without_one(api):
    answer = advised(api, failure_type="ci_runner")
    advice = RetryAdvice.objects.get()
    assert answer["failure"] is None and advice.failure is None
    assert advice.retry is True


def test_the_failure_api_and_admin_page_show_the_counts(api, qa_analyst):
    failure = report_failure(api, job="build", type="ci_runner")
    advised(api, failure_type="ci_runner", branch="main")
    advised(api, failure_type="ci_runner", branch="main", attempt=9)
    row = api.get("/api/v1/failures/", {"repository": "acme/shop"}).json()["results"][0]
    detail = api.get(f"/api/v1/failures/{failure.id}/").json()
    assert (row["retry_advice_count"], row["retries_advised"]) == (2, 1)
    assert (detail["retry_advice_count"], detail["retries_advised"]) == (2, 1)
    client = Client()
    client.force_login(qa_analyst)
    page = client.get(reverse("admin:escalation_failure_change", args=[failure.id]))
    assert page.status_code == 200
    assert "2 answered, 1 said retry" in page.content.decode()
    listing = client.get(reverse("admin:escalation_retryadvice_changelist"), {"failure__id__exact": failure.id})
    assert listing.status_code == 200
    assert len(listing.context["cl"].result_list) == 2


def test_retry_advice_is_read_only_in_the_admin(api, admin_client):
    advised(api, failure_type="ci_runner")
    advice = RetryAdvice.objects.get()
    page = admin_client.get(reverse("admin:escalation_retryadvice_change", args=[advice.id]))
    assert page.status_code == 200
    assert admin_client.post(reverse("admin:escalation_retryadvice_delete", args=[advice.id])).status_code == 403
    assert admin_client.get(reverse("admin:escalation_retryadvice_add")).status_code == 403
    assert RetryAdvice.objects.count() == 1


# --- Idempotency-Key ---


def test_a_repeated_idempotency_key_answers_the_stored_advice_and_counts_once(api):
    failure = report_failure(api, job="build", type="ci_runner")
    key = {"Idempotency-Key": "run-9001-build-1"}
    first = ask(api, headers=key, failure_type="ci_runner", branch="main")
    again = ask(api, headers=key, failure_type="ci_runner", branch="main")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True and first.json()["duplicate"] is False
    assert {k: v for k, v in again.json().items() if k != "duplicate"} == {
        k: v for k, v in first.json().items() if k != "duplicate"
    }
    failure.refresh_from_db()
    assert (failure.retry_advice_count, failure.retries_advised) == (1, 1)
    assert RetryAdvice.objects.count() == 1


def test_the_same_key_from_another_source_is_another_question(api):
    key = {"Idempotency-Key": "k1"}
    other = Client(headers={"authorization": f"Bearer {token('ingest', name='other-ci')}"})
    assert ask(api, headers=key, failure_type="ci_runner").status_code == 201
    assert ask(other, headers=key, failure_type="ci_runner").status_code == 201
    assert RetryAdvice.objects.count() == 2


def test_without_a_key_every_question_is_answered_and_recorded(api):
    advised(api, failure_type="ci_runner")
    advised(api, failure_type="ci_runner")
    assert RetryAdvice.objects.count() == 2


def test_an_idempotency_key_over_255_characters_is_refused(api):
    response = ask(api, headers={"Idempotency-Key": "k" * 256}, failure_type="ci_runner")
    assert_error(response, 400, "bad_input", "Idempotency-Key")
    assert not RetryAdvice.objects.exists()


# --- authentication and scope ---


def test_a_token_without_the_ingest_scope_is_refused(db):
    client = Client(headers={"authorization": f"Bearer {token(Scope.READ, Scope.REQUEST)}"})
    response = ask(client, failure_type="ci_runner")
    assert_error(response, 403, "permission_denied", "'ingest'")
    assert not RetryAdvice.objects.exists()


def test_no_token_is_refused(db):
    assert_error(ask(Client(), failure_type="ci_runner"), 401, "not_authenticated")
    assert not RetryAdvice.objects.exists()


def test_a_logged_in_user_without_a_token_is_refused(client, qa_analyst):
    client.force_login(qa_analyst)
    assert ask(client, failure_type="ci_runner").status_code == 403
    assert not RetryAdvice.objects.exists()


def test_the_schema_documents_the_endpoint_and_its_idempotency_header(db):
    document = Client().get("/api/schema/", {"format": "json"}).json()
    operation = document["paths"]["/api/v1/retry-advice/"]["post"]
    assert operation["description"]
    assert "Idempotency-Key" in {parameter["name"] for parameter in operation["parameters"]}
    assert {"200", "201"} <= set(operation["responses"])


# --- bad input: a 4xx naming the problem, nothing stored ---


def assert_error(response, status: int, code: str, *named: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code, body
    for text in named:
        assert text in body["detail"], body
    return body


def post_raw(api: Client, body: bytes | str, content_type: str = "application/json"):
    return api.generic("POST", URL, body, content_type=content_type)


def without(key: str) -> dict:
    return {k: v for k, v in {**QUESTION, "failure_type": "ci_runner"}.items() if k != key}


BAD_BODIES = [
    ("non-object body", [QUESTION], "must be a JSON object"),
    ("a string body", "retry please", "must be a JSON object"),
    ("missing repository", without("repository"), "repository: This field is required"),
    ("missing job", without("job"), "job: This field is required"),
    ("missing attempt", without("attempt"), "attempt: This field is required"),
    ("repository a number", {**QUESTION, "repository": 5, "failure_type": "ci_runner"}, "repository: must be a string"),
    ("job null", {**QUESTION, "job": None, "failure_type": "ci_runner"}, "job: This field may not be null"),
    ("attempt 0", {**QUESTION, "attempt": 0, "failure_type": "ci_runner"}, "attempt: "),
    ("attempt negative", {**QUESTION, "attempt": -2, "failure_type": "ci_runner"}, "attempt: "),
    ("attempt a string", {**QUESTION, "attempt": "2", "failure_type": "ci_runner"}, "attempt: must be an integer"),
    ("attempt a bool", {**QUESTION, "attempt": True, "failure_type": "ci_runner"}, "attempt: must be an integer"),
    ("attempt a float", {**QUESTION, "attempt": 1.5, "failure_type": "ci_runner"}, "attempt: must be an integer"),
    ("attempt too large", {**QUESTION, "attempt": 2**31, "failure_type": "ci_runner"}, "attempt: "),
    ("unknown failure_type", {**QUESTION, "failure_type": "flaky"}, "failure_type: 'flaky' is not a failure type"),
    ("failure_type a list", {**QUESTION, "failure_type": ["ci_runner"]}, "failure_type: "),
    ("neither type nor excerpt", QUESTION, "give failure_type or log_excerpt"),
    ("a blank excerpt only", {**QUESTION, "log_excerpt": "  \n"}, "give failure_type or log_excerpt"),
    ("log_excerpt a number", {**QUESTION, "log_excerpt": 42}, "log_excerpt: must be a string"),
    ("other_jobs not a list", {**QUESTION, "failure_type": "ci_runner", "other_jobs": "lint"}, "other_jobs: "),
    ("other_jobs item not an object", {**QUESTION, "failure_type": "ci_runner", "other_jobs": ["lint"]}, "other_jobs"),
    (
        "unknown other_jobs status",
        {**QUESTION, "failure_type": "ci_runner", "other_jobs": [{"name": "lint", "status": "skipped"}]},
        "'skipped' is not success or failure",
    ),
    (
        "other_jobs without a name",
        {**QUESTION, "failure_type": "ci_runner", "other_jobs": [{"status": "success"}]},
        "name: This field is required",
    ),
    (
        "unknown key in other_jobs",
        {**QUESTION, "failure_type": "ci_runner", "other_jobs": [{"name": "a", "status": "success", "url": "x"}]},
        "url: unknown field",
    ),
    ("unknown field", {**QUESTION, "failure_type": "ci_runner", "atempt": 2}, "atempt: unknown field"),
    ("run_id a number", {**QUESTION, "failure_type": "ci_runner", "run_id": 4711}, "run_id: must be a string"),
]


@pytest.mark.parametrize(("body", "named"), [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES])
def test_bad_input_is_refused_naming_the_problem_and_stores_nothing(api, body, named):
    failure = report_failure(api, job="build", type="ci_runner")
    assert_error(post_raw(api, json.dumps(body)), 400, "invalid", named)
    assert not RetryAdvice.objects.exists()
    failure.refresh_from_db()
    assert failure.retry_advice_count == 0


def test_malformed_json_is_refused(api):
    assert_error(post_raw(api, '{"repository": "acme/shop", "job": '), 400, "malformed_json", "malformed JSON")
    assert not RetryAdvice.objects.exists()


def test_a_body_that_is_not_json_at_all_is_refused(api):
    assert_error(post_raw(api, "repository=acme/shop", content_type="text/plain"), 415, "unsupported_media_type")
    assert not RetryAdvice.objects.exists()


def test_an_oversized_body_is_refused(api):
    body = json.dumps({**QUESTION, "log_excerpt": "x" * (settings.PORTAL_MAX_EVENT_BYTES + 1)})
    assert_error(post_raw(api, body), 413, "payload_too_large", "larger than the limit")
    assert not RetryAdvice.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b'{"repository": "acme/shop", "job": "bu\x00ild", "attempt": 1, "failure_type": "ci_runner"}',
        b'{"repository": "acme/shop", "job": "bu\\u0000ild", "attempt": 1, "failure_type": "ci_runner"}',
    ],
    ids=["raw NUL byte", "escaped NUL character"],
)
def test_nul_bytes_are_refused(api, body):
    assert_error(post_raw(api, body), 400, "nul_byte", "NUL")
    assert not RetryAdvice.objects.exists()


def test_a_log_excerpt_that_is_not_utf8_is_classified_with_replacement_characters(api):
    body = b'{"repository": "acme/shop", "job": "build", "attempt": 1, "log_excerpt": "\xff no space left on device"}'
    response = post_raw(api, body)
    assert response.status_code == 201, response.content
    assert response.json()["failure_type"] == "ci_runner"


def test_a_repository_that_is_not_utf8_is_refused(api):
    body = b'{"repository": "acme/\xff", "job": "build", "attempt": 1, "failure_type": "ci_runner"}'
    assert_error(post_raw(api, body), 400, "malformed_json", "'repository'")
    assert not RetryAdvice.objects.exists()


def test_get_is_not_allowed(api):
    assert_error(api.get(URL), 405, "method_not_allowed")


# --- concurrency: one key, many deliveries at once; counters without lost updates ---


def ask_together(token_value: str, count: int, headers: dict, **fields) -> list[int]:
    """POST the same question from ``count`` threads, each on its own connection, released at once."""
    clients = [Client(headers={"authorization": f"Bearer {token_value}"}) for _ in range(count)]
    return sorted(run_together([lambda c=c: ask(c, headers=headers, **fields).status_code for c in clients]))


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_repeats_of_one_key_store_one_advice_and_count_once():
    token_value = token(Scope.INGEST, name="racing-ci")
    api = Client(headers={"authorization": f"Bearer {token_value}"})
    failure = report_failure(api, job="build", type="ci_runner")
    for round_number in range(5):
        key = {"Idempotency-Key": f"race-{round_number}"}
        assert ask_together(token_value, 4, key, failure_type="ci_runner", branch="main") == [200, 200, 200, 201]
    failure.refresh_from_db()
    assert (failure.retry_advice_count, failure.retries_advised) == (5, 5)
    assert RetryAdvice.objects.count() == 5


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_answers_on_one_failure_are_all_counted():
    token_value = token(Scope.INGEST, name="racing-ci")
    api = Client(headers={"authorization": f"Bearer {token_value}"})
    failure = report_failure(api, job="build", type="ci_runner")
    assert ask_together(token_value, 6, {}, failure_type="ci_runner", branch="main") == [201] * 6
    failure.refresh_from_db()
    assert (failure.retry_advice_count, failure.retries_advised) == (6, 6)


# --- the README's CI step, run by bash against a live server ---


def readme_ci_step() -> str:
    """The `run` line of the GitHub Actions step in README "Retry advice", as YAML folds it."""
    text = (Path(settings.BASE_DIR) / "README.md").read_text()
    start = text.index("## Retry advice")
    section = text[start : text.index("\n## ", start + 1)]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    return yaml.safe_load(block)[0]["run"]


def run_ci_step(live_server, tmp_path, script: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run the README's step with `make integration-tests` replaced by ``script``; the answer and the runs."""
    command = tmp_path / "integration-tests.sh"
    command.write_text(f"#!/bin/sh\necho run >> runs\n{script}\n")
    command.chmod(0o755)
    environment = {
        **os.environ,
        "PORTAL_URL": live_server.url,
        "PORTAL_TOKEN": token(Scope.INGEST, name="github"),
        "GITHUB_REPOSITORY": "acme/shop",
        "GITHUB_REF_NAME": "main",
        "GITHUB_RUN_ID": "4711",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "integration-tests",
    }
    line = readme_ci_step().replace("make integration-tests", str(command))
    result = subprocess.run(
        ["bash", "-e", "-c", line], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60
    )
    runs = (tmp_path / "runs").read_text().count("run")
    return result, runs


needs_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "jq")), reason="the README's step needs bash, curl, jq"
)
DISK_FULL = "echo 'write /var/lib/docker/tmp/GetImageBlob812: no space left on device' >&2; exit 1"


@needs_tools
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_readmes_ci_step_retries_a_runner_failure_until_it_passes(live_server, tmp_path):
    MatrixRow.objects.filter(failure_type="ci_runner").update(retry_backoff_seconds=0)  # the step sleeps 0 s
    result, runs = run_ci_step(live_server, tmp_path, f'[ "$(wc -l < runs)" -gt 2 ] && exit 0; {DISK_FULL}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert runs == 3
    assert "portal: attempt 2 of 3: retry ci_runner after 0 s" in result.stdout
    assert list(RetryAdvice.objects.order_by("attempt").values_list("attempt", "retry", "idempotency_key")) == [
        (1, True, "4711-1-integration-tests-1"),
        (2, True, "4711-1-integration-tests-2"),
    ]


@needs_tools
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_readmes_ci_step_gives_up_when_the_retries_are_used_up(live_server, tmp_path):
    MatrixRow.objects.filter(failure_type="ci_runner").update(retry_backoff_seconds=0)
    result, runs = run_ci_step(live_server, tmp_path, DISK_FULL)
    assert result.returncode == 1
    assert runs == 4
    assert "portal: attempt 4 of 3: the ci_runner retries are used up" in result.stdout


@needs_tools
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_readmes_ci_step_never_retries_a_failing_test(live_server, tmp_path):
    result, runs = run_ci_step(live_server, tmp_path, "echo 'FAILED tests/test_cart.py::test_total'; exit 1")
    assert result.returncode == 1
    assert runs == 1
    assert "portal: integration_test failures are never retried" in result.stdout
