"""Flakiness: a job or test that failed and passed on one commit is possibly flaky.

Observations from a run in which most jobs failed for infrastructure reasons are kept but left out
of flaky statistics (``counts_for_statistics``): such a run says nothing about the tests.
"""

from datetime import datetime

from django.db.models import Q

from escalation.choices import INFRASTRUCTURE_TYPES, JobStatus
from escalation.models import CIEvent, CIJob, CIRun, Failure, FlakyObservation, Repository


def run_mostly_infrastructure(*, run: CIRun) -> bool:
    """True when more than half of the run's jobs failed with an infrastructure failure type."""
    jobs = CIJob.objects.filter(run=run).count()
    if jobs == 0:
        return False
    infra = (
        CIJob.objects.filter(
            run=run,
            events__status=JobStatus.FAILURE,
            events__occurrence__failure__failure_type__in=[str(t) for t in INFRASTRUCTURE_TYPES],
        )
        .distinct()
        .count()
    )
    return infra * 2 > jobs


def flaky_record(
    *,
    repository: Repository,
    job_name: str,
    commit_sha: str,
    failing_run: CIRun | None,
    now: datetime,
    test_key: str = "",
    test_name: str = "",
    failure: Failure | None = None,
) -> FlakyObservation | None:
    """Record one observation per job (or test) and commit; None when it was already recorded."""
    infra = failing_run is not None and run_mostly_infrastructure(run=failing_run)
    observation, created = FlakyObservation.objects.get_or_create(
        repository=repository,
        job_name=job_name[:255],
        test_key=test_key,
        commit_sha=commit_sha,
        defaults={
            "test_name": test_name[:500],
            "failure": failure,
            "observed_at": now,
            "counts_for_statistics": not infra,
            "reason": "the failing run failed mostly for infrastructure reasons" if infra else "",
        },
    )
    return observation if created else None


def job_flaky_check(
    *, repository: Repository, run: CIRun, job_name: str, recovered_ids: list[int], now: datetime
) -> FlakyObservation | None:
    """After a job passed: if the same job failed on the same commit (an earlier attempt or a retry),
    it is possibly flaky. The failure it recovered is named on the observation."""
    failed = (
        CIEvent.objects.filter(
            job__run__repository=repository,
            job__run__commit_sha=run.commit_sha,
            job__name=job_name,
            status=JobStatus.FAILURE,
        )
        .select_related("job__run")
        .order_by("-received_at", "-id")
        .first()
    )
    if failed is None:
        return None
    failure = Failure.objects.filter(Q(pk__in=recovered_ids)).order_by("id").first() if recovered_ids else None
    return flaky_record(
        repository=repository,
        job_name=job_name,
        commit_sha=run.commit_sha,
        failing_run=failed.job.run,
        failure=failure,
        now=now,
    )
