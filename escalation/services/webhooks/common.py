"""What GitHub and GitLab webhooks share: verification, delivery de-duplication, the run several
webhook kinds describe, and job and run outcomes mapped onto ``event_ingest``."""

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils.dateparse import parse_datetime

from escalation.choices import JobStatus, Resolution, SourceKind, WebhookOutcome
from escalation.exceptions import MalformedPayload, UnknownWebhookSource, WebhookUnauthorized
from escalation.models import CIJob, CIRun, Failure, IngestSource, WebhookAlias, WebhookDelivery, WebhookRun
from escalation.models.failures import OPEN_Q
from escalation.services.config import config_changed, routing_config
from escalation.services.failures import failure_run_level_replace, failures_resolve
from escalation.services.flaky import job_flaky_check
from escalation.services.ingestion import EventInput, event_classify, event_ingest, repository_for
from escalation.services.log_text import log_excerpt_clip
from portal.audit import Actor, audit_record, row_state
from portal.models import AuditAction

SUITE_RUN_PREFIX = "check-suite-"  # the run id of a run first seen through a check suite


@dataclass(frozen=True)
class WebhookAnswer:
    """What a delivery is answered: 200 processed (or a replay), 202 ignored with the reason."""

    status_code: int
    body: dict


@dataclass(frozen=True)
class Handled:
    outcome: str
    reason: str = ""
    result: dict = field(default_factory=dict)


def ignored(reason: str) -> Handled:
    return Handled(WebhookOutcome.IGNORED, reason)


def webhook_source(*, name: str, kind: str) -> IngestSource:
    """The active source of this kind named in the URL."""
    source = IngestSource.objects.filter(name=name, kind=kind, is_active=True).first()
    if source is None:
        label = SourceKind(kind).label
        raise UnknownWebhookSource(f"no active source {name!r} takes {label}; create it with create_ingest_token")
    return source


def github_signature_verify(*, source: IngestSource, body: bytes, signature: str) -> None:
    """X-Hub-Signature-256 must be sha256=<hex HMAC-SHA256 of the raw body under the source's secret>."""
    secret = _secret_of(source)
    if not signature.startswith("sha256="):
        raise WebhookUnauthorized("X-Hub-Signature-256 is missing or not 'sha256=<hex>'")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise WebhookUnauthorized("the signature does not match the body: check the webhook secret")


def gitlab_token_verify(*, source: IngestSource, token: str) -> None:
    """X-Gitlab-Token must equal the source's webhook secret (compared in constant time)."""
    secret = _secret_of(source)
    if not token:
        raise WebhookUnauthorized("X-Gitlab-Token is missing")
    if not hmac.compare_digest(secret.encode(), token.encode()):
        raise WebhookUnauthorized("X-Gitlab-Token does not match the source's webhook secret")


def _secret_of(source: IngestSource) -> str:
    if not source.webhook_secret:
        raise WebhookUnauthorized(
            f"source {source.name!r} has no webhook secret: create it with create_ingest_token --webhook-secret"
        )
    return source.webhook_secret


def webhook_deliver(
    *,
    source: IngestSource,
    delivery_id: str,
    event: str,
    action: str,
    now: datetime,
    handle: Callable[[], Handled],
) -> WebhookAnswer:
    """Handle a delivery once: a replayed delivery id answers the first answer and stores nothing.

    The handling and the delivery's record commit together, so a failed delivery leaves nothing.
    """
    stored = WebhookDelivery.objects.filter(source=source, delivery_id=delivery_id).first()
    if stored is not None:
        return _replay(stored)
    try:
        with transaction.atomic():
            handled = handle()
            answer = _answer(handled, event, action)
            WebhookDelivery.objects.create(
                source=source,
                delivery_id=delivery_id,
                event=event[:64],
                action=action[:64],
                outcome=handled.outcome,
                reason=handled.reason[:300],
                result=answer.body,
                received_at=now,
            )
    except IntegrityError:
        stored = WebhookDelivery.objects.filter(source=source, delivery_id=delivery_id).first()
        if stored is None:
            raise
        return _replay(stored)
    return answer


def _answer(handled: Handled, event: str, action: str) -> WebhookAnswer:
    body = {"status": handled.outcome, "event": event, "action": action, "duplicate": False}
    if handled.reason:
        body["reason"] = handled.reason
    body.update(handled.result)
    return WebhookAnswer(202 if handled.outcome == WebhookOutcome.IGNORED else 200, body)


def _replay(stored: WebhookDelivery) -> WebhookAnswer:
    return WebhookAnswer(200, {**stored.result, "duplicate": True})


def delivery_key(header: str, body: bytes) -> str:
    """The delivery header, or a digest of the body when the sender gave none."""
    return header.strip()[:200] if header.strip() else "sha256:" + hashlib.sha256(body).hexdigest()


# --- reading payloads ---


def need(data: Any, path: str, kind: type | tuple = str) -> Any:
    """The value at a dotted path, of the given type, or 400 naming the path."""
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value or value[key] is None:
            raise MalformedPayload(f"the payload lacks {path}")
        value = value[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MalformedPayload(f"{path} has the wrong type ({type(value).__name__})")
    return value


def opt(data: Any, path: str, default: Any = "") -> Any:
    """The value at a dotted path, or the default when any step is missing or null."""
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or value.get(key) is None:
            return default
        value = value[key]
    return value


def moment(raw: Any) -> datetime | None:
    """ISO 8601 or GitLab's 'YYYY-MM-DD HH:MM:SS UTC'; None when absent or unreadable."""
    if not isinstance(raw, str) or not raw:
        return None
    text = raw.strip()
    if text.endswith(" UTC"):
        text = text[:-4].replace(" ", "T") + "+00:00"
    try:
        return parse_datetime(text)
    except ValueError:
        return None


# --- runs and outcomes ---


@dataclass(frozen=True)
class RunRef:
    """A run as one webhook kind knows it."""

    repository: str
    aliases: tuple[str, ...]  # ids this kind knows the run by, the most specific first
    run_id: str  # what a run first seen through this kind is stored under
    attempt: int
    branch: str
    commit: str
    default_branch: str = ""
    commit_author: str = ""
    url: str = ""


def webhook_run(*, source: IngestSource, ref: RunRef, now: datetime, job_alias: str = "") -> WebhookRun:
    """The one run every webhook kind of this run maps onto, whichever arrived first.

    1. Look the kind's ids up (a check run's id first: it names its job's run exactly).
    2. None known: this kind's own id becomes the run's.
    3. Register every id this kind knows for the run, so the other kinds find it; concurrent first
       deliveries meet at the alias's unique constraint and all use the run that won.
    """
    aliases = ([job_alias] if job_alias else []) + list(ref.aliases)
    run = _run_by_alias(source, aliases)
    if run is None:
        run = WebhookRun.objects.create(
            source=source, repository=ref.repository, run_id=ref.run_id, attempt=ref.attempt, created_at=now
        )
    WebhookAlias.objects.bulk_create(
        [WebhookAlias(source=source, alias=alias[:255], run=run) for alias in aliases], ignore_conflicts=True
    )
    return _run_by_alias(source, aliases) or run


def _run_by_alias(source: IngestSource, aliases: list[str]) -> WebhookRun | None:
    found = {
        a.alias: a.run for a in WebhookAlias.objects.filter(source=source, alias__in=aliases).select_related("run")
    }
    return next((found[alias] for alias in aliases if alias in found), None)


def default_branch_note(*, repository: str, default_branch: str, actor: Actor, now: datetime) -> None:
    """The repository's default branch, as the webhook reports it, joins its protected branches."""
    if not default_branch:
        return
    config = routing_config()
    row = repository_for(config, repository)
    if row.default_branch == default_branch[:255]:
        return
    before = row_state(row)
    row.default_branch = default_branch[:255]
    row.save(update_fields=["default_branch"])
    audit_record(actor=actor, action=AuditAction.UPDATE, obj=row, at=now, before=before, after=row_state(row))
    config_changed()


@dataclass(frozen=True)
class JobOutcome:
    """A job's completed outcome as a webhook reported it."""

    name: str
    status: str  # JobStatus
    step: str = ""
    log_excerpt: str = ""
    url: str = ""
    runner: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    idempotency_key: str = ""
    fields: dict = field(default_factory=dict)
    record_only: str = ""  # why the job is recorded but opens nothing (e.g. allow_failure)


def job_outcome(
    *, source: IngestSource, ci_system: str, ref: RunRef, run: WebhookRun, job: JobOutcome, now: datetime
) -> dict:
    """One job's outcome through event_ingest: a failure opens or recurs (the first failed job of a run
    with a run-level failure takes that failure over), a success recovers the job's failures and marks a
    re-run that passed flaky."""
    data = _event_input(ci_system, ref, run, job)
    if job.record_only:
        job_record(source=source, data=data, now=now)
        return {"job": job.name, "status": job.status, "recorded_only": job.record_only}
    replaced = _run_level_replace(source, run, data, now) if job.status == JobStatus.FAILURE else None
    result = event_ingest(ingest_source=source, data=data, now=now)
    answer: dict[str, Any] = {"job": job.name, "status": job.status, "duplicate": not result.created}
    if result.failure is not None:
        answer["failure"] = result.failure.pk
        if replaced is not None and result.failure.pk == replaced.pk:
            Failure.objects.filter(pk=replaced.pk).update(classification_event=result.event)
            answer["replaced_run_level"] = replaced.pk
        elif result.created:
            answer["superseded"] = _run_level_supersede(source, run, result.failure, now)
    if job.status == JobStatus.SUCCESS:
        answer["recovered"] = result.recovered_ids
        if result.created:
            repository = result.event.job.run.repository
            flaky = job_flaky_check(
                repository=repository, run=result.event.job.run, job_name=job.name, recovered_ids=result.recovered_ids,
                now=now,
            )  # fmt: skip
            answer["possibly_flaky"] = flaky is not None
    return answer


def run_outcome(
    *, source: IngestSource, ci_system: str, ref: RunRef, run: WebhookRun, status: str, name: str, now: datetime
) -> dict:
    """A whole run's outcome. A failed run whose failed jobs are not known opens one run-level failure
    (under a stand-in job ``name``); a passed run recovers the run-level failures of that name."""
    if status == JobStatus.SUCCESS:
        job = JobOutcome(name=run.run_level_job or name[:255], status=JobStatus.SUCCESS)
        if not Failure.objects.filter(
            OPEN_Q, repository__name=ref.repository, branch=ref.branch[:255], job_name=job.name
        ).exists():
            return {"run_level": {"detail": "the run passed; no run-level failure to recover"}}
        return {"run_level": job_outcome(source=source, ci_system=ci_system, ref=ref, run=run, job=job, now=now)}
    if run.run_level_job:
        return {"run_level": {"job": run.run_level_job, "detail": "the run-level failure is already reported"}}
    failed = _failed_jobs(source, ci_system, ref, run)
    if failed:
        return {"run_level": {"detail": "its failed jobs are known: no run-level failure", "failed_jobs": failed}}
    run.run_level_job = name[:255]
    run.save(update_fields=["run_level_job"])
    job = JobOutcome(
        name=run.run_level_job, status=JobStatus.FAILURE, log_excerpt="the run failed; no failed job known"
    )
    return {"run_level": job_outcome(source=source, ci_system=ci_system, ref=ref, run=run, job=job, now=now)}


def _failed_jobs(source: IngestSource, ci_system: str, ref: RunRef, run: WebhookRun) -> list[str]:
    jobs = CIJob.objects.filter(
        run__source=source,
        run__ci_system=ci_system,
        run__repository__name=ref.repository,
        run__run_id=run.run_id,
        run__attempt=run.attempt,
        status=JobStatus.FAILURE,
    ).exclude(name=run.run_level_job)
    if run.run_id.startswith(SUITE_RUN_PREFIX):
        # A check suite names none of its jobs, and a workflow_job names no suite: until a check_run
        # links them, the failed jobs of the suite's commit stand for its jobs.
        jobs = CIJob.objects.filter(
            run__source=source,
            run__ci_system=ci_system,
            run__repository__name=ref.repository,
            run__commit_sha=ref.commit[:64],
            status=JobStatus.FAILURE,
        ).exclude(Exists(_stand_ins(source, ref.repository).filter(run_level_job=OuterRef("name"))))
    return sorted(set(jobs.values_list("name", flat=True)))


def _stand_ins(source: IngestSource, repository: str):
    return WebhookRun.objects.filter(source=source, repository=repository).exclude(run_level_job="")


def _run_level_failure(source: IngestSource, run: WebhookRun, commit: str) -> Failure | None:
    """The open run-level failure of this run, locked; None once a job's failure replaced it. A run with
    none may still be reported by a check suite that nothing has linked to it yet: one of its commit."""
    own = Q(job_name=run.run_level_job, latest_run__run_id=run.run_id) if run.run_level_job else Q(pk__in=[])
    suite = Q(
        Exists(_stand_ins(source, run.repository).filter(run_level_job=OuterRef("job_name"),
                                                         run_id=OuterRef("latest_run__run_id"))),
        latest_run__run_id__startswith=SUITE_RUN_PREFIX,
        latest_run__commit_sha=commit,
    )  # fmt: skip
    return (
        Failure.objects.select_for_update(of=("self",))
        .select_related("repository", "latest_run")
        .filter(OPEN_Q, own | suite, repository__name=run.repository, latest_run__source=source)
        .order_by("id")
        .first()
    )


def _run_level_replace(source: IngestSource, run: WebhookRun, data: EventInput, now: datetime) -> Failure | None:
    """The first failed job of a run with an open run-level failure takes that failure over (it becomes
    the job's, under the fingerprint the job's event is classified to), so the event recurs onto it."""
    if data.job == run.run_level_job:
        return None
    failure = _run_level_failure(source, run, data.commit)
    if failure is None or failure.branch != data.branch:  # the job's failure is fingerprinted by its branch
        return None
    config = routing_config()
    log_excerpt = log_excerpt_clip(data.log_excerpt)
    classification = event_classify(config=config, data=data)
    replaced = failure_run_level_replace(
        failure=failure, job_name=data.job, classification=classification, log_excerpt=log_excerpt, config=config,
        actor=Actor.of_source(source), now=now,
    )  # fmt: skip
    return failure if replaced else None


def _run_level_supersede(source: IngestSource, run: WebhookRun, failure: Failure, now: datetime) -> list[int]:
    """The job's failure was open already (from an earlier run), so it could not take the run-level
    failure over: the run-level failure resolves as superseded by it."""
    if not run.run_level_job or failure.job_name == run.run_level_job:
        return []
    stale = list(
        Failure.objects.filter(
            OPEN_Q,
            repository__name=run.repository,
            job_name=run.run_level_job,
            latest_run__source=source,
            latest_run__run_id=run.run_id,
        ).values_list("pk", flat=True)
    )
    if stale:
        failures_resolve(
            failure_ids=stale,
            resolution=Resolution.SUPERSEDED,
            actor=Actor.of_source(source),
            now=now,
            note=f"replaced by failure #{failure.pk} of job {failure.job_name}",
        )
    return stale


def _event_input(ci_system: str, ref: RunRef, run: WebhookRun, job: JobOutcome) -> EventInput:
    return EventInput(
        source=ci_system,
        repository=ref.repository,
        branch=ref.branch[:255],
        commit=ref.commit[:64],
        run_id=run.run_id,
        attempt=run.attempt,
        job=job.name[:255],
        status=job.status,
        commit_author=ref.commit_author[:254],
        step=job.step[:255],
        log_excerpt=job.log_excerpt,
        url=(job.url or ref.url)[:500],
        runner=job.runner[:200],
        started_at=job.started_at,
        finished_at=job.finished_at,
        idempotency_key=job.idempotency_key,
        extra=dict(job.fields),
    )


def job_record(*, source: IngestSource, data: EventInput, now: datetime) -> CIJob:
    """Keep a job that opens nothing (an allowed failure): its run and its status, no event."""
    repository = repository_for(routing_config(), data.repository)
    run, _ = CIRun.objects.get_or_create(
        source=source,
        ci_system=data.source,
        repository=repository,
        run_id=data.run_id,
        attempt=data.attempt,
        defaults={"branch": data.branch, "commit_sha": data.commit, "commit_author": data.commit_author},
    )
    job, _ = CIJob.objects.update_or_create(
        run=run,
        name=data.job,
        defaults={
            "status": data.status,
            "url": data.url,
            "runner_label": data.runner,
            "started_at": data.started_at,
            "finished_at": data.finished_at or now,
        },
    )
    return job


def log_limit() -> int:
    return settings.PORTAL_LOG_EXCERPT_LIMIT
