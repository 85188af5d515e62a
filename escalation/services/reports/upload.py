"""What every report upload shares: the spooled body, its run and job, the Report row, the receipt,
and failing items (tests, findings) turned into failures through the failure service."""

import copy
import dataclasses
import hashlib
import itertools
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, transaction

from escalation.choices import FailureType, JobStatus
from escalation.exceptions import MalformedReport
from escalation.models import CIEvent, CIJob, CIRun, Failure, IngestSource, Report, Repository, RunFlag
from escalation.services.classification import FALLBACK, Classification, failure_classify
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.failures import Reported, failures_recover, failures_report_many
from escalation.services.ingestion import repository_for
from escalation.services.statements import insert_many, unsaved
from portal.audit import Actor
from portal.errors import PayloadTooLarge

_SPOOL_IN_MEMORY = 1024 * 1024  # bytes kept in memory before the body spills to a temporary file
_CHUNK = 64 * 1024
_LABEL_LIMIT = 255  # Failure.job_name
FAILING_TEST = "failing test (no rule matched)"
_ITEM_CHUNK = 500


@dataclass(frozen=True)
class RunTarget:
    """The run and job a report belongs to, from the upload's query parameters."""

    repository: str
    branch: str
    commit: str
    run_id: str
    job: str
    attempt: int = 1
    ci_system: str = ""
    commit_author: str = ""


@dataclass
class Body:
    """The uploaded file, spooled (memory, then disk) while its size and digest were taken."""

    file: IO[bytes]
    size: int
    digest: str


def body_spool(*, stream: Any, limit: int, content_length: int | None = None) -> Body:
    """Read the request body once: refuse it past ``limit`` bytes, hash it, keep it for parsing."""
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"the body ({content_length} bytes) is larger than the limit of {limit} bytes")
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 - returned to the caller
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            spool.close()
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        digest.update(chunk)
        spool.write(chunk)
    if size == 0:
        spool.close()
        raise MalformedReport("the body is empty: send the report file itself as the request body")
    spool.seek(0)
    return Body(file=spool, size=size, digest=digest.hexdigest())


@dataclass
class Upload:
    """One upload being stored: where it belongs and what its receipt says so far."""

    source: IngestSource
    actor: Actor
    config: RoutingConfig
    target: RunTarget
    repository: Repository
    run: CIRun
    job: CIJob
    report: Report
    now: datetime
    ignored: Counter = field(default_factory=Counter)
    warnings: list[dict] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)

    def ignore(self, reason: str, count: int = 1) -> None:
        """Count an item left out of the failures, by reason code."""
        self.ignored[reason] += count

    def warn(self, code: str, detail: str) -> None:
        self.warnings.append({"code": code, "detail": detail})

    def receipt(self, **counts: Any) -> dict:
        return {
            "report_id": self.report.pk,
            "kind": self.report.kind,
            "format": self.report.format,
            "duplicate": False,
            "run_id": self.run.run_id,
            "attempt": self.run.attempt,
            "job": self.job.name,
            **counts,
            "skipped_items": [{"reason": reason, "count": n} for reason, n in sorted(self.ignored.items())],
            "warnings": self.warnings,
            "failures_opened": sorted(set(self.opened)),
            "failures_updated": sorted(set(self.updated) - set(self.opened)),
            "recovered": sorted(set(self.recovered)),
            "flaky": self.flaky,
        }


class _Duplicate(Exception):
    def __init__(self, report: Report):
        self.report = report


def report_ingest(
    *,
    ingest_source: IngestSource,
    kind: str,
    report_format: str,
    target: RunTarget,
    body: Body,
    now: datetime,
    store: Callable[[Upload, Body], dict],
) -> tuple[dict, bool]:
    """Store one upload in one transaction and answer its receipt; True when it was new.

    The same body for the same job and kind is stored once: a repeat answers the first receipt
    with ``duplicate: true``. ``store`` parses the body and fills the report; any error it raises
    rolls everything back.
    """
    try:
        with transaction.atomic():
            upload = _upload_begin(ingest_source, kind, report_format, target, body, now)
            receipt = store(upload, body)
            upload.report.receipt = receipt
            upload.report.save()
            return receipt, True
    except _Duplicate as duplicate:
        return {**duplicate.report.receipt, "duplicate": True}, False
    except IntegrityError:
        stored = _stored_report(ingest_source, kind, target, body)  # a concurrent upload of the same body won
        if stored is None:
            raise
        return {**stored.receipt, "duplicate": True}, False


def _upload_begin(
    ingest_source: IngestSource, kind: str, report_format: str, target: RunTarget, body: Body, now: datetime
) -> Upload:
    config = routing_config()
    repository = repository_for(config, target.repository)
    run, _ = CIRun.objects.get_or_create(
        source=ingest_source,
        ci_system=target.ci_system or default_ci_system(ingest_source),
        repository=repository,
        run_id=target.run_id,
        attempt=target.attempt,
        defaults={"branch": target.branch, "commit_sha": target.commit, "commit_author": target.commit_author},
    )
    # A report does not know the job's outcome: a job first seen here counts as passed until the report
    # itself fails something (items_report); a job CI already reported keeps its status.
    job, _ = CIJob.objects.get_or_create(run=run, name=target.job, defaults={"status": JobStatus.SUCCESS})
    stored = Report.objects.filter(job=job, kind=kind, digest=body.digest).first()
    if stored is not None:
        raise _Duplicate(stored)
    report = Report.objects.create(
        source=ingest_source,
        kind=kind,
        format=report_format,
        run=run,
        job=job,
        digest=body.digest,
        size_bytes=body.size,
        received_at=now,
    )
    actor = Actor.of_source(ingest_source)
    return Upload(ingest_source, actor, config, target, repository, run, job, report, now)


def _stored_report(ingest_source: IngestSource, kind: str, target: RunTarget, body: Body) -> Report | None:
    return Report.objects.filter(
        source=ingest_source,
        kind=kind,
        digest=body.digest,
        run__repository__name=target.repository,
        run__run_id=target.run_id,
        run__attempt=target.attempt,
        job__name=target.job,
    ).first()


def default_ci_system(ingest_source: IngestSource) -> str:
    """The CI system name runs of this source are stored under when a report does not name one."""
    return {"github": "github", "gitlab": "gitlab"}.get(ingest_source.kind, ingest_source.name)


def run_flag(*, upload: Upload, code: str, detail: str) -> None:
    """Flag the run (once per code), e.g. zero_tests."""
    RunFlag.objects.get_or_create(
        run=upload.run, code=code, defaults={"detail": detail[:300], "created_at": upload.now}
    )


@dataclass(frozen=True)
class FailingItem:
    """A failing test or an open-worthy finding, about to become a failure occurrence."""

    key: str  # unique within the report
    label: str  # the failure's job name: it identifies the test or finding in the fingerprint
    text: str  # classified, and kept as the event's log excerpt; already redacted
    fields: dict[str, str]
    type_hint: str = ""
    commit_author: str | None = None  # the person a finding names (a secret's committer), else the run's


def items_report(*, upload: Upload, items: Iterable[FailingItem], keep_failures: bool = True) -> list[Failure]:
    """Each item becomes a CI event of the report's job and opens or recurs its failure, in bulk,
    a chunk at a time so that memory stays flat however many tests fail. Items may come from a
    generator, built a chunk at a time. Without ``keep_failures`` the failures are not returned (the
    receipt has their ids), so each chunk's rows are freed."""
    failures: list[Failure] = []
    items = iter(items)
    while chunk := list(itertools.islice(items, _ITEM_CHUNK)):
        opened = _items_chunk(upload, chunk)
        if keep_failures:
            failures.extend(opened)
    return failures


def _items_chunk(upload: Upload, items: list[FailingItem]) -> list[Failure]:
    if not items:
        return []
    limit = settings.PORTAL_LOG_EXCERPT_LIMIT
    events = [
        unsaved(
            CIEvent,
            source=upload.source,
            idempotency_key=_event_key(upload.report.pk, item.key),
            job=upload.job,
            status=JobStatus.FAILURE,
            type_hint=item.type_hint,
            log_excerpt=item.text[-limit:],
            event_fields=item.fields,  # what event-field rules read, kept so a rule change can re-run them
            received_at=upload.now,
        )
        for item in items
    ]
    insert_many(events, keys_needed=True)
    reported = []
    for item, event in zip(items, events, strict=True):
        run = upload.run
        if item.commit_author is not None and item.commit_author != run.commit_author:
            run = copy.copy(run)  # routes by the person the finding names; the row itself is unchanged
            run.commit_author = item.commit_author
        reported.append(Reported(upload.repository, run, event, item.label, upload.now, _classify(upload, item, event)))
    results = failures_report_many(config=upload.config, reported=reported, actor=upload.actor, now=upload.now)
    for failure, opened in results:
        (upload.opened if opened else upload.updated).append(failure.pk)
    if upload.job.status != JobStatus.FAILURE:
        CIJob.objects.filter(pk=upload.job.pk).update(status=JobStatus.FAILURE)
    return [failure for failure, _ in results]


def _classify(upload: Upload, item: FailingItem, event: CIEvent) -> Classification:
    """The classification rules decide; a failing test that no rule types is a unit test."""
    classification = failure_classify(
        rules=upload.config.rules,
        job=upload.job.name,
        log_excerpt=event.log_excerpt,
        type_hint=item.type_hint,
        event_fields=item.fields,
    )
    if classification.classified_by == FALLBACK and item.fields.get("report") == "junit":
        return dataclasses.replace(
            classification,
            failure_type=FailureType.UNIT_TEST,
            classified_by=FAILING_TEST,
            matched_text=item.fields.get("test", "")[:500],
        )
    return classification


def labels_recover(*, upload: Upload, labels: list[str]) -> None:
    """Items that passed this time: their open failures resolve as recovered."""
    for label in labels:
        upload.recovered.extend(
            failures_recover(
                repository=upload.repository,
                branch=upload.run.branch,
                job_name=label,
                actor=upload.actor,
                now=upload.now,
            )
        )


def item_label(*parts: str) -> str:
    """A failure's job name for an item inside a job: the parts joined, cut with a hash when too long."""
    label = " › ".join(part for part in parts if part)
    if len(label) <= _LABEL_LIMIT:
        return label
    suffix = " #" + hashlib.sha256(label.encode()).hexdigest()[:12]
    return label[: _LABEL_LIMIT - len(suffix)] + suffix


def short_hash(*parts: Any) -> str:
    """A 32-character identity of the parts (not a secret: used for keys and de-duplication).

    A string counts by its text, anything else as ``str(part)``. Strings are joined as they are, without a
    check per part: a JUnit upload hashes every test case's three names.
    """
    try:
        joined = "\x1f".join(parts)
    except TypeError:  # a part that is no string
        joined = "\x1f".join(part if isinstance(part, str) else str(part) for part in parts)
    return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()


def clean(text: Any, limit: int | None = None) -> str:
    """A string PostgreSQL can store (no NUL), optionally cut to ``limit`` characters."""
    value = "" if text is None else str(text)
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value if limit is None else value[:limit]


def _event_key(report_id: int, item_key: str) -> str:
    return f"report:{report_id}:{item_key}"
