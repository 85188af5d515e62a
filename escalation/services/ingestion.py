"""Ingestion: one CI event in, stored once, turned into a failure occurrence or a recovery."""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction

from escalation.choices import JobStatus
from escalation.models import CIEvent, CIJob, CIRun, Failure, IngestSource, Repository
from escalation.services.classification import Classification, failure_classify
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.failures import Reported, failure_report, failures_recover
from escalation.services.log_text import log_excerpt_clip
from escalation.services.statements import Step, conflict_update, insert_chain, unsaved
from portal.audit import Actor


@dataclass(frozen=True)
class EventInput:
    """A CI event as the API accepted it (see README "Reporting from CI")."""

    source: str
    repository: str
    branch: str
    commit: str
    run_id: str
    job: str
    status: str
    attempt: int = 1
    commit_author: str = ""
    step: str = ""
    type: str = ""
    log_excerpt: str = ""
    url: str = ""
    runner: str = ""
    changed_files: list[str] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    idempotency_key: str = ""
    extra: dict = field(default_factory=dict)

    def natural_key(self) -> str:
        """DESIGN's natural key (source, run, attempt, job, status) plus the repository.

        Some CI systems (Jenkins) number runs per project, so run ids alone collide across repositories.
        """
        return "\x1f".join((self.source, self.repository, self.run_id, str(self.attempt), self.job, self.status))


@dataclass(frozen=True)
class IngestResult:
    created: bool
    event: CIEvent
    failure: Failure | None
    recovered_ids: list[int]


class _Duplicate(Exception):
    pass


def event_ingest(*, ingest_source: IngestSource, data: EventInput, now: datetime) -> IngestResult:
    """Store the event once; a failure opens or recurs, a success recovers the job's open failures.

    The whole event commits in one transaction or not at all. A second delivery with the same
    idempotency key (or natural key) stores nothing and returns the first delivery's result.
    """
    key = _stored_key(data.idempotency_key or data.natural_key())
    try:
        return _ingest(ingest_source=ingest_source, data=data, key=key, now=now)
    except _Duplicate:
        event = CIEvent.objects.select_related("occurrence__failure").get(source=ingest_source, idempotency_key=key)
        occurrence = getattr(event, "occurrence", None)
        return IngestResult(False, event, occurrence.failure if occurrence else None, [])


@transaction.atomic
def _ingest(*, ingest_source: IngestSource, data: EventInput, key: str, now: datetime) -> IngestResult:
    config = routing_config()
    actor = Actor.of_source(ingest_source)
    seen_at = min(data.finished_at or now, now)
    repository = repository_for(config, data.repository)
    run = _new_run(ingest_source, repository, data)
    job = _new_job(run, data, seen_at)
    event = unsaved(
        CIEvent,
        source=ingest_source,
        idempotency_key=key,
        job=job,
        status=data.status,
        step=data.step,
        type_hint=data.type,
        log_excerpt=log_excerpt_clip(data.log_excerpt),
        event_fields=_event_fields(data),
        received_at=now,
    )
    if data.status == JobStatus.SUCCESS:
        if not _store(run, job, event):
            raise _Duplicate
        recovered = failures_recover(repository=repository, branch=data.branch, job_name=data.job, actor=actor, now=now)
        return IngestResult(True, event, None, recovered)

    classification = event_classify(config=config, data=data)
    reported = Reported(repository, run, event, data.job, seen_at, classification)
    if connection.vendor == "postgresql":  # the event's rows go in with its occurrence, in one statement
        answer = failure_report(
            config=config, reported=reported, actor=actor, now=now, stored_with=_store_steps(run, job, event)
        )
    elif _store(run, job, event):
        answer = failure_report(config=config, reported=reported, actor=actor, now=now)
    else:
        answer = None
    if answer is None:
        raise _Duplicate
    return IngestResult(True, event, answer[0], [])


_INSERT_EVENT_SQL = (
    "INSERT INTO escalation_cievent"
    " (source_id, idempotency_key, job_id, status, step, type_hint, log_excerpt, event_fields, received_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (source_id, idempotency_key) DO NOTHING RETURNING id"
)


_EVENT_FIELDS = CIEvent._meta.get_field("event_fields")


def _insert_event(event: CIEvent) -> bool:
    """Store the event unless its key is stored already; one statement, no savepoint. False: a duplicate."""
    params = [
        event.source_id,
        event.idempotency_key,
        event.job.pk,
        str(event.status),  # psycopg would dump an enum member by its name
        event.step,
        event.type_hint,
        event.log_excerpt,
        _EVENT_FIELDS.get_db_prep_save(event.event_fields, connection),
        connection.ops.adapt_datetimefield_value(event.received_at),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENT_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return False
    event.pk = row[0]
    event._state.adding = False
    return True


def event_classify(*, config: RoutingConfig, data: EventInput) -> Classification:
    """The classification ingesting this event gives it (webhooks ask before ingesting a job's event)."""
    return failure_classify(
        rules=config.rules,
        job=data.job,
        step=data.step,
        log_excerpt=log_excerpt_clip(data.log_excerpt),
        type_hint=data.type,
        event_fields=_event_fields(data),
        changed_files=data.changed_files,
    )


def repository_for(config: RoutingConfig, name: str) -> Repository:
    """The repository by name, created with the default branch policy on first report."""
    repository = config.repositories.get(name)
    if repository is None:
        repository, created = Repository.objects.get_or_create(name=name)
        if not created:  # a row created now may still roll back with this transaction
            config.repositories[name] = repository
    return repository


_RUN_KEY = ["source", "ci_system", "repository", "run_id", "attempt"]
_RUN_UPDATED = ["branch"]
_JOB_KEY = ["run", "name"]
_JOB_UPDATED = ["step", "runner_label", "status", "url", "started_at", "finished_at"]


def _store(run: CIRun, job: CIJob, event: CIEvent) -> bool:
    """Upsert the run and the job, insert the event unless its key is stored already. False: a duplicate.

    PostgreSQL does all three in one statement; elsewhere the ORM upserts and the event insert follow.
    A duplicate's run and job upserts roll back with the caller's transaction.
    """
    if connection.vendor != "postgresql":
        CIRun.objects.bulk_create([run], update_conflicts=True, unique_fields=_RUN_KEY, update_fields=_RUN_UPDATED)
        job.run = run
        CIJob.objects.bulk_create([job], update_conflicts=True, unique_fields=_JOB_KEY, update_fields=_JOB_UPDATED)
        event.job = job
        return _insert_event(event)
    insert_chain(_store_steps(run, job, event))
    return event.pk is not None


def _store_steps(run: CIRun, job: CIJob, event: CIEvent) -> list[Step]:
    """PostgreSQL: the run and job upserts and the event insert, as one chain of CTEs."""
    run_conflict = conflict_update(CIRun, unique_fields=_RUN_KEY, update_fields=_RUN_UPDATED)
    job_conflict = conflict_update(CIJob, unique_fields=_JOB_KEY, update_fields=_JOB_UPDATED)
    return [
        ("run", run, {}, run_conflict),
        ("job", job, {"run_id": "run.id"}, job_conflict),
        ("event", event, {"job_id": "job.id"}, "ON CONFLICT (source_id, idempotency_key) DO NOTHING"),
    ]


def _new_run(ingest_source: IngestSource, repository: Repository, data: EventInput) -> CIRun:
    return unsaved(
        CIRun,
        source=ingest_source,
        ci_system=data.source,
        repository=repository,
        run_id=data.run_id,
        attempt=data.attempt,
        branch=data.branch,
        commit_sha=data.commit,
        commit_author=data.commit_author,
        changed_files=data.changed_files,
        url=data.url,
    )


def _new_job(run: CIRun, data: EventInput, seen_at: datetime) -> CIJob:
    return unsaved(
        CIJob,
        run=run,
        name=data.job,
        step=data.step,
        runner_label=data.runner,
        status=data.status,
        url=data.url,
        started_at=data.started_at,
        finished_at=seen_at,
    )


def _stored_key(key: str) -> str:
    """The key as stored: one too long for the column is hashed, never cut (a cut key collides)."""
    limit = CIEvent._meta.get_field("idempotency_key").max_length
    return key if len(key) <= limit else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _event_fields(data: EventInput) -> dict:
    """The fields event_field rules may match, kept with the event so that a rule change can re-run them."""
    return {"source": data.source, "runner": data.runner, **data.extra}
