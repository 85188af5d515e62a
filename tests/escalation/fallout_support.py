"""Helpers of the fallout tests: history built the way CI reports it (events API, real JUnit uploads) or,
where the portal writes it itself (breaches, job timings), as rows with explicit timestamps."""

import itertools
import re
from datetime import datetime, timedelta

from django.utils import timezone

from escalation.choices import FailureStatus, JobStatus
from escalation.models import CIJob, CIRun, Failure, Fallout, FalloutRule, IngestSource, Repository
from escalation.services.failures import failure_correct_type
from portal.audit import Actor
from tests.escalation.ingest_support import fixture, ok, upload
from tests.factories import report_failure

_seq = itertools.count(1)

# Docker Hub's answer to an anonymous pull over its rate limit, as `docker pull` prints it (the default
# classification rules tag it rate_limited; tests/data/classification/log_lines.yaml).
DOCKER_RATE_LIMIT = (
    "Error response from daemon: toomanyrequests: You have reached your pull rate limit. You may increase the "
    "limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"
)
JUNIT_FAIL = fixture("junit", "EnricoMi-publish-unit-test-result-action__pytest-junit.fail.xml")
# The same real report with its one failing test passing: the <failure> element taken out.
JUNIT_PASS = re.sub(rb"<failure .*?</failure>", b"", JUNIT_FAIL, flags=re.S)
FLAKY_TEST = "test_rsh_events"


def rule_set(code: str, **changes) -> FalloutRule:
    rule = FalloutRule.objects.get(code=code)
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.save()
    return rule


def failure_ids(fallout: Fallout) -> set[int]:
    return set(fallout.failures.values_list("pk", flat=True))


def reported(api, count: int, **fields) -> list[int]:
    """``count`` failures, each a new job, reported through the events API."""
    return [report_failure(api, job=f"job-{next(_seq)}", **fields).pk for _ in range(count)]


def breached(api, count: int, *, at: datetime, **fields) -> list[int]:
    """``count`` failures whose SLA the sweep marked breached at ``at``."""
    ids = reported(api, count, **fields)
    Failure.objects.filter(pk__in=ids).update(breached_at=at, escalation_level=1)
    return ids


def reassigned(api, count: int) -> list[int]:
    """``count`` unit-test failures QA corrected to integration tests: a new owning team (Backend)."""
    ids = reported(api, count, type="unit_test")
    for pk in ids:
        failure_correct_type(
            failure_id=pk, failure_type="integration_test", actor=Actor.task("test"), now=timezone.now()
        )
    return ids


def flaky_rounds(api, count: int, *, job: str = "unit-tests") -> list[int]:
    """``count`` commits on which the real JUnit report failed FLAKY_TEST and a re-run passed it."""
    for _ in range(count):
        commit, run = f"c{next(_seq):07d}", str(next(_seq))
        ok(upload(api, "junit", JUNIT_FAIL, commit=commit, run_id=run, job=job))
        ok(upload(api, "junit", JUNIT_PASS, commit=commit, run_id=run, attempt=2, job=job))
    return flaky_test_failures(job)


def flaky_test_failures(job: str = "unit-tests") -> list[int]:
    return list(
        Failure.objects.filter(job_name__startswith=job, job_name__endswith=FLAKY_TEST).values_list("pk", flat=True)
    )


def failing_uploads(api, count: int, *, body: bytes = JUNIT_FAIL, job: str = "unit-tests") -> None:
    for _ in range(count):
        ok(upload(api, "junit", body, commit=f"c{next(_seq):07d}", run_id=str(next(_seq)), job=job))


def job_run(
    repository: Repository,
    job: str,
    *,
    finished_at: datetime,
    seconds: float,
    status: str = JobStatus.SUCCESS,
    branch: str = "main",
) -> CIJob:
    """One finished job of a new run, with its start and end as CI reported them."""
    run = CIRun.objects.create(
        source=IngestSource.objects.order_by("id").first(),
        ci_system="github-actions",
        repository=repository,
        run_id=str(next(_seq)),
        branch=branch,
        commit_sha=f"{next(_seq):07d}",
    )
    return CIJob.objects.create(
        run=run,
        name=job,
        status=status,
        started_at=finished_at - timedelta(seconds=seconds),
        finished_at=finished_at,
    )


def green_history(repository: Repository, job: str, *, count: int, seconds: float, before: datetime) -> None:
    """``count`` successful runs of ``seconds`` each, one an hour, ending a day before ``before``."""
    for n in range(count):
        job_run(repository, job, finished_at=before - timedelta(days=1, hours=count - n), seconds=seconds)


def resolve(ids: list[int]) -> None:
    Failure.objects.filter(pk__in=ids).update(status=FailureStatus.RESOLVED)
