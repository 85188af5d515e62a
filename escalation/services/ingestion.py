"""Ingestion: one CI event in, stored once, turned into a failure occurrence or a recovery."""

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction

from escalation.choices import JobStatus
from escalation.models import CIEvent, CIJob, CIRun, Failure, IngestSource, Repository
from escalation.models.ingestion import EVENT_ONCE
from escalation.services.classification import Classification, failure_classify
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.failures import (
    OPEN_FOR_JOB,
    FailuresChanged,
    Reported,
    failure_report,
    failures_recover,
    failures_recover_with_event,
)
from escalation.services.log_text import log_excerpt_clip
from escalation.services.statements import (
    Step,
    chain_ids,
    chain_parts,
    chain_stored,
    conflict_update,
    insert_chain,
    loaded_row,
    prepared_cursor,
    row_columns,
    statement_alone,
    unsaved,
    violated_constraint,
)
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

    The event is stored whole or not at all. On PostgreSQL that takes one statement for a pass or a
    recurrence and two for a new failure or a recovery, each its own transaction when the caller has none
    (see failures.reporting._report_with_event and _succeed). A second delivery with the same idempotency
    key (or natural key) stores nothing and returns the first delivery's result.
    """
    key = _stored_key(data.idempotency_key or data.natural_key())
    try:
        return _ingest(ingest_source=ingest_source, data=data, key=key, now=now)
    except _Duplicate:
        event = CIEvent.objects.select_related("occurrence__failure__owner_team").get(
            source=ingest_source, idempotency_key=key
        )
        occurrence = getattr(event, "occurrence", None)
        return IngestResult(False, event, occurrence.failure if occurrence else None, [])


def _ingest(*, ingest_source: IngestSource, data: EventInput, key: str, now: datetime) -> IngestResult:
    config = routing_config()
    repository = _known_repository(config, data.repository)
    if repository is not None and connection.vendor == "postgresql":
        return _ingest_rows(config, repository, ingest_source, data, key, now)
    with transaction.atomic():  # a repository created for this event is stored with it or not at all
        repository = repository or repository_for(config, data.repository)
        return _ingest_rows(config, repository, ingest_source, data, key, now)


def _ingest_rows(
    config: RoutingConfig,
    repository: Repository,
    ingest_source: IngestSource,
    data: EventInput,
    key: str,
    now: datetime,
) -> IngestResult:
    actor = Actor.of_source(ingest_source)
    seen_at = min(data.finished_at or now, now)
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
        if connection.vendor == "postgresql":
            return IngestResult(True, event, None, _succeed(run, job, event, data, actor, now))
        with transaction.atomic():
            if not _store(run, job, event):
                raise _Duplicate
            recovered = failures_recover(
                repository=repository, branch=data.branch, job_name=data.job, actor=actor, now=now
            )
        return IngestResult(True, event, None, recovered)

    reported = Reported(repository, run, event, data.job, seen_at, event_classify(config=config, data=data))
    if connection.vendor == "postgresql":  # the event's rows go in with its occurrence or its new failure
        answer = failure_report(
            config=config,
            reported=reported,
            actor=actor,
            now=now,
            stored_with=_store_steps(run, job, event, event_conflict=""),
            store_if=_not_stored(event),
        )
    elif _store(run, job, event):  # in _ingest's transaction
        answer = failure_report(config=config, reported=reported, actor=actor, now=now)
    else:
        answer = None
    if answer is None:
        raise _Duplicate
    return IngestResult(True, event, answer[0], [])


def _not_stored(event: CIEvent) -> tuple[str, list]:
    """The SQL condition that no event with this one's key is stored: a later delivery of a stored event
    stores nothing and fails nothing. (A concurrent delivery makes the insert fail on the unique key.)"""
    return (
        "NOT EXISTS (SELECT 1 FROM escalation_cievent WHERE source_id = %s AND idempotency_key = %s)",
        [event.source_id, event.idempotency_key],
    )


@contextlib.contextmanager
def _stored_once() -> Iterator[None]:
    """Around a statement that stores the event: when a concurrent delivery stored it first, the statement
    fails as a whole on the event's unique key and the event is a duplicate."""
    try:
        yield
    except IntegrityError as error:
        if violated_constraint(error) == EVENT_ONCE:
            raise _Duplicate from error
        raise


_RECOVERY_ATTEMPTS = 3


def _succeed(run: CIRun, job: CIJob, event: CIEvent, data: EventInput, actor: Actor, now: datetime) -> list[int]:
    """PostgreSQL: store a success, recovering its job's open failures; the ids recovered. Two statements
    at most and no transaction around them: the first stores the rows if nothing is open (a pass, what most
    CI events are) or else reads the open failures; the second stores the rows with their recovery."""
    for _ in range(_RECOVERY_ATTEMPTS):
        found = _store_if_nothing_open(run, job, event, data)
        if not found:
            return []
        try:
            with _stored_once(), statement_alone():
                recovered = failures_recover_with_event(
                    found, stored_with=_store_steps(run, job, event, event_conflict=""), store_if=_not_stored(event),
                    actor=actor, now=now,
                )  # fmt: skip
        except FailuresChanged:  # read them again
            continue
        if recovered is None:
            raise _Duplicate
        return recovered
    raise IntegrityError(f"the open failures of job {data.job!r} changed under this event {_RECOVERY_ATTEMPTS} times")


def _store_if_nothing_open(run: CIRun, job: CIJob, event: CIEvent, data: EventInput) -> list[tuple[Failure, str]]:
    """PostgreSQL, one statement and no transaction around it: store a success's rows if its job has no open
    failure. Otherwise it stores nothing and returns the open failures, each with its row version (xmin)."""
    steps = _store_steps(run, job, event, event_conflict="")
    duplicate, duplicate_params = _not_stored(event)
    chain, chain_params = chain_parts(steps, gate="gate")
    sql = (
        f"WITH open_failure AS (SELECT {row_columns(Failure)}, xmin::text FROM escalation_failure"  # noqa: S608
        f" WHERE {OPEN_FOR_JOB} ORDER BY id),"
        f" gate AS (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM open_failure) AND {duplicate}), "
        + ", ".join(chain)
        + f" SELECT {chain_ids(steps)}, open_failure.* FROM (SELECT) AS one"  # noqa: S608 - from _meta
        " LEFT JOIN open_failure ON TRUE"
    )
    params = [run.repository_id, data.branch, data.job, *duplicate_params, *chain_params]
    with _stored_once(), statement_alone(), prepared_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    ids = list(rows[0][: len(steps)])
    if ids[-1] is not None:
        chain_stored(steps, ids)
        return []
    found = [(loaded_row(Failure, row[len(steps) : -1]), row[-1]) for row in rows if row[-1] is not None]
    if found:
        return found
    raise _Duplicate


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


def _known_repository(config: RoutingConfig, name: str) -> Repository | None:
    """The repository by name if it is stored (then cached with the configuration)."""
    repository = config.repositories.get(name)
    if repository is None:
        repository = Repository.objects.filter(name=name).first()
        if repository is not None:
            config.repositories[name] = repository
    return repository


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


_SKIP_STORED_EVENT = "ON CONFLICT (source_id, idempotency_key) DO NOTHING"


def _store_steps(run: CIRun, job: CIJob, event: CIEvent, *, event_conflict: str = _SKIP_STORED_EVENT) -> list[Step]:
    """PostgreSQL: the run and job upserts and the event insert, as one chain of CTEs. ``event_conflict=""``:
    a stored key fails the statement (which stores nothing of it) instead of leaving the event out."""
    run_conflict = conflict_update(CIRun, unique_fields=_RUN_KEY, update_fields=_RUN_UPDATED)
    job_conflict = conflict_update(CIJob, unique_fields=_JOB_KEY, update_fields=_JOB_UPDATED)
    return [
        ("run", run, {}, run_conflict),
        ("job", job, {"run_id": "run.id"}, job_conflict),
        ("event", event, {"job_id": "job.id"}, event_conflict),
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
