"""Retry advice: CI asks whether to re-run a failed job; the matrix row's retry policy answers.

The policy, in the order it is checked (README "Retry advice"):

1. the failure type comes from ``failure_type`` when given, else from the classification rules over the
   job, the step and the log excerpt (the rules ingestion uses; nothing matched is the fallback type);
2. the matrix row is the snapshot of the failure the question concerns, else the current row;
3. ``retries`` 0: never; attempt N (the first run is 1) past ``retries``: no, the retries are used up;
4. ``other_jobs_succeed``: the run's other jobs (as given, else as stored for the run's latest attempt)
   must all have succeeded; none known is no retry, since missing data is never a pass;
5. ``infrastructure_healthy``: no open infrastructure failure on the repository;
6. otherwise retry after ``retry_backoff_seconds * 2 ** (N - 1)`` seconds.

Every answer is stored as a ``RetryAdvice`` and counted on the failure it concerns, in one transaction.
"""

from dataclasses import dataclass, replace
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F, Max

from escalation.choices import INFRASTRUCTURE_TYPES, JobStatus, RetryCondition
from escalation.models import CIJob, Failure, IngestSource, RetryAdvice
from escalation.models.failures import OPEN_Q
from escalation.services.classification import Classification, failure_classify
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.failures import failure_fingerprint
from escalation.services.log_text import log_excerpt_clip

CLASSIFIED_BY_FIELD = "failure_type"  # RetryAdvice.classified_by when CI named the type itself
_NAMED_AT_MOST = 10  # jobs or failures a reason lists before "and N more"
_REASON_LENGTH = RetryAdvice._meta.get_field("reason").max_length
_DELAY_LIMIT = 2**31 - 1  # the delay_seconds column is a PostgreSQL integer


@dataclass(frozen=True)
class RetryQuestion:
    """What CI asks (see README "Retry advice"). ``other_jobs`` None or empty: not given."""

    repository: str
    job: str
    attempt: int
    failure_type: str = ""
    log_excerpt: str = ""
    step: str = ""
    branch: str = ""
    run_id: str = ""
    other_jobs: list[dict] | None = None
    idempotency_key: str = ""


@dataclass(frozen=True)
class RetryAnswer:
    advice: RetryAdvice
    created: bool  # False: a repeated Idempotency-Key, answered from the stored advice


@dataclass(frozen=True)
class _Verdict:
    retry: bool
    delay_seconds: int
    max_attempts: int
    reason: str
    other_jobs: list[dict]


def retry_advice(*, ingest_source: IngestSource, question: RetryQuestion, now: datetime) -> RetryAnswer:
    """Answer whether CI should retry the job, record the answer and count it on its failure.

    A repeated Idempotency-Key from the same source answers the stored advice and counts nothing again.
    """
    if question.idempotency_key:
        stored = _stored(ingest_source, question.idempotency_key)
        if stored is not None:
            return RetryAnswer(stored, created=False)
    config = routing_config()
    classification = _classify(question, config)
    failure = _failure_concerned(question, classification.failure_type)
    row = _matrix_row(failure, classification.failure_type, config)
    verdict = _decide(question=question, failure_type=classification.failure_type, row=row)
    if classification.is_fallback:
        verdict = replace(verdict, reason=_clip(f"no classification rule matched (fallback type); {verdict.reason}"))
    advice = RetryAdvice(
        source=ingest_source,
        failure=failure,
        repository=question.repository,
        branch=question.branch,
        run_id=question.run_id,
        job_name=question.job,
        failure_type=classification.failure_type,
        classified_by=classification.classified_by[: RetryAdvice._meta.get_field("classified_by").max_length],
        attempt=question.attempt,
        other_jobs=verdict.other_jobs,
        retry=verdict.retry,
        delay_seconds=verdict.delay_seconds,
        max_attempts=verdict.max_attempts,
        reason=verdict.reason,
        asked_at=now,
        idempotency_key=question.idempotency_key,
    )
    try:
        _record(advice)
    except IntegrityError:
        stored = _stored(ingest_source, question.idempotency_key) if question.idempotency_key else None
        if stored is None:
            raise
        return RetryAnswer(stored, created=False)  # a concurrent request with the same key won
    return RetryAnswer(advice, created=True)


@transaction.atomic
def _record(advice: RetryAdvice) -> None:
    """Store the advice and count it on its failure; both or neither."""
    advice.save()
    if advice.failure_id is not None:
        Failure.objects.filter(pk=advice.failure_id).update(
            retry_advice_count=F("retry_advice_count") + 1,
            retries_advised=F("retries_advised") + (1 if advice.retry else 0),
        )


def _stored(ingest_source: IngestSource, key: str) -> RetryAdvice | None:
    return RetryAdvice.objects.filter(source=ingest_source, idempotency_key=key).first()


def _classify(question: RetryQuestion, config: RoutingConfig) -> Classification:
    if question.failure_type:
        return Classification(question.failure_type, CLASSIFIED_BY_FIELD, None, question.failure_type)
    return failure_classify(
        rules=config.rules,
        job=question.job,
        step=question.step,
        log_excerpt=log_excerpt_clip(question.log_excerpt),
    )


def _failure_concerned(question: RetryQuestion, failure_type: str) -> Failure | None:
    """The open failure of the repository (and branch), job and type; else the job's latest of that type in
    the run; else none."""
    if question.branch:
        fingerprint = failure_fingerprint(
            repository=question.repository, branch=question.branch, job=question.job, failure_type=failure_type
        )
        failure = Failure.objects.filter(OPEN_Q, fingerprint=fingerprint).first()
    else:
        same_job = Failure.objects.filter(
            OPEN_Q, repository__name=question.repository, job_name=question.job, failure_type=failure_type
        )
        failure = same_job.order_by("-last_seen_at", "-id").first()
    if failure is not None or not question.run_id:
        return failure
    in_run = Failure.objects.filter(
        repository__name=question.repository,
        job_name=question.job,
        failure_type=failure_type,
        occurrences__event__job__run__run_id=question.run_id,
    )
    return in_run.order_by("-last_seen_at", "-id").first()


def _matrix_row(failure: Failure | None, failure_type: str, config: RoutingConfig) -> dict | None:
    """The failure's frozen matrix row, else the current one; None when the type has no row."""
    if failure is not None:
        return failure.matrix_snapshot
    return config.snapshot(failure_type) if failure_type in config.matrix else None


def _decide(*, question: RetryQuestion, failure_type: str, row: dict | None) -> _Verdict:
    """The policy's answer, steps 3-6 of the module's list."""
    retries = int(row.get("retries") or 0) if row else 0
    if retries == 0:
        why = "have no matrix row" if row is None else "are never retried (the matrix row allows no retries)"
        return _Verdict(False, 0, 0, _clip(f"{failure_type} failures {why}"), [])
    attempt = question.attempt
    if attempt > retries:
        reason = f"attempt {attempt} of {retries}: the {failure_type} retries are used up"
        return _Verdict(False, 0, retries, _clip(reason), [])
    condition = row.get("retry_condition") or RetryCondition.NONE
    other_jobs: list[dict] = []
    holds = ""
    if condition == RetryCondition.OTHER_JOBS_SUCCEED:
        other_jobs, where = _other_jobs(question)
        refusal = _other_jobs_refusal(other_jobs, where)
        holds = f"; the run's other jobs succeeded ({where})"
    elif condition == RetryCondition.INFRASTRUCTURE_HEALTHY:
        refusal = _infrastructure_refusal(question.repository)
        holds = f"; no open infrastructure failure on {question.repository}"
    else:
        refusal = ""
    if refusal:
        return _Verdict(False, 0, retries, _clip(refusal), other_jobs)
    delay = min(int(row.get("retry_backoff_seconds") or 0) * 2 ** (attempt - 1), _DELAY_LIMIT)
    reason = f"attempt {attempt} of {retries}: retry {failure_type} after {delay} s{holds}"
    return _Verdict(True, delay, retries, _clip(reason), other_jobs)


def _other_jobs(question: RetryQuestion) -> tuple[list[dict], str]:
    """The run's other jobs as given, else as stored for the run's latest attempt; and where they came from."""
    if question.other_jobs:
        jobs = [{"name": j["name"], "status": j["status"]} for j in question.other_jobs if j["name"] != question.job]
        return jobs, "as given"
    if not question.run_id:
        return [], ""
    run_jobs = CIJob.objects.filter(run__repository__name=question.repository, run__run_id=question.run_id)
    latest = run_jobs.aggregate(attempt=Max("run__attempt"))["attempt"]
    if latest is None:
        return [], ""
    stored = run_jobs.filter(run__attempt=latest).exclude(name=question.job).order_by("name")
    jobs = [{"name": name, "status": status} for name, status in stored.values_list("name", "status")]
    return jobs, f"as stored for run {question.run_id} attempt {latest}"


def _other_jobs_refusal(jobs: list[dict], where: str) -> str:
    if not jobs:
        return (
            "the run's other jobs are unknown: send other_jobs (their names and statuses) "
            "or report them to the portal first; this type is retried only while they succeed"
        )
    failed = [job["name"] for job in jobs if job["status"] != JobStatus.SUCCESS]
    if failed:
        return f"other jobs of the run failed ({where}): {_listing(failed)}"
    return ""


def _infrastructure_refusal(repository: str) -> str:
    """Infrastructure health: no open ci_runner, database_connectivity or test_environment failure on the
    repository. (Health measurements join this when the quality gates bring them.)"""
    open_infrastructure = Failure.objects.filter(
        OPEN_Q, repository__name=repository, failure_type__in=sorted(INFRASTRUCTURE_TYPES)
    ).order_by("id")
    found = [f"#{pk} ({failure_type})" for pk, failure_type in open_infrastructure.values_list("id", "failure_type")]
    if found:
        return f"infrastructure is not healthy: open infrastructure failures on {repository}: {_listing(found)}"
    return ""


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMED_AT_MOST])
    rest = len(names) - _NAMED_AT_MOST
    return f"{shown} and {rest} more" if rest > 0 else shown


def _clip(reason: str) -> str:
    return reason if len(reason) <= _REASON_LENGTH else reason[: _REASON_LENGTH - 3] + "..."
