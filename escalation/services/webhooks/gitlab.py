"""GitLab webhooks: Pipeline Hook and Job Hook (also the older Build Hook and ``job_*`` keys).

A job reported by both hooks counts once (its event key is the job id and status); jobs with
``allow_failure`` are recorded but open nothing; a failed pipeline with no failed job known opens
one run-level failure, which its jobs' failures replace when they arrive.
"""

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from escalation.choices import JobStatus
from escalation.exceptions import MalformedPayload
from escalation.models import IngestSource
from escalation.services.webhooks.common import (
    Handled,
    JobOutcome,
    RunRef,
    WebhookAnswer,
    default_branch_note,
    ignored,
    job_outcome,
    moment,
    need,
    opt,
    run_outcome,
    webhook_deliver,
    webhook_run,
)
from portal.audit import Actor

CI_SYSTEM = "gitlab"
_STATUS = {"success": JobStatus.SUCCESS, "failed": JobStatus.FAILURE}
_HOOKS = {"pipeline": "Pipeline Hook", "build": "Job Hook"}


def gitlab_webhook_handle(
    *, source: IngestSource, event: str, delivery_id: str, payload: Any, now: datetime
) -> WebhookAnswer:
    """Answer one verified GitLab delivery (see the module docstring)."""
    if not isinstance(payload, dict):
        raise MalformedPayload("the payload must be a JSON object")
    kind = payload.get("object_kind") if isinstance(payload.get("object_kind"), str) else ""
    label = event or _HOOKS.get(kind, kind)

    def handle() -> Handled:
        if kind == "pipeline":
            return _pipeline(source, payload, now)
        if kind in ("build", "job"):
            return _job_hook(source, payload, now)
        return ignored(
            f"object_kind {kind!r} ({event or 'no X-Gitlab-Event'}) is not handled; send Pipeline or Job Hooks"
        )

    return webhook_deliver(source=source, delivery_id=delivery_id, event=label, action=kind, now=now, handle=handle)


def _project_path(payload: dict) -> str:
    """namespace/project: from the project object, else the repository's home page, else the name."""
    path = opt(payload, "project.path_with_namespace")
    if path:
        return path
    for url in (opt(payload, "project.web_url"), opt(payload, "repository.homepage")):
        if isinstance(url, str) and url:
            found = urlsplit(url).path.strip("/")
            if found:
                return found
    name = opt(payload, "project_name")
    if isinstance(name, str) and name:
        return name.replace(" / ", "/").strip()
    raise MalformedPayload("the payload names no project (project.path_with_namespace or repository.homepage)")


def _web_url(payload: dict) -> str:
    return opt(payload, "project.web_url") or opt(payload, "repository.homepage") or ""


def _pipeline(source: IngestSource, payload: dict, now: datetime) -> Handled:
    attrs = need(payload, "object_attributes", dict)
    pipeline_id = need(payload, "object_attributes.id", int)
    repository = _project_path(payload)
    ref = RunRef(
        repository=repository,
        aliases=(f"gl-pipeline:{repository}:{pipeline_id}",),
        run_id=str(pipeline_id),
        attempt=1,
        branch=need(payload, "object_attributes.ref"),
        commit=need(payload, "object_attributes.sha"),
        default_branch=opt(payload, "project.default_branch"),
        commit_author=opt(payload, "commit.author.email"),
        url=opt(attrs, "url") or (f"{_web_url(payload)}/-/pipelines/{pipeline_id}" if _web_url(payload) else ""),
    )
    default_branch_note(
        repository=repository, default_branch=ref.default_branch, actor=Actor.of_source(source), now=now
    )
    run = webhook_run(source=source, ref=ref, now=now)
    builds = payload.get("builds") if payload.get("builds") is not None else payload.get("jobs") or []
    if not isinstance(builds, list):
        raise MalformedPayload("builds must be a JSON array")
    jobs, not_final = [], 0
    for index, build in enumerate(builds):
        if not isinstance(build, dict):
            raise MalformedPayload(f"builds[{index}] must be a JSON object")
        outcome = _build_outcome(build, "", repository, payload)
        if outcome is None:
            not_final += 1
            continue
        jobs.append(job_outcome(source=source, ci_system=CI_SYSTEM, ref=ref, run=run, job=outcome, now=now))
    result: dict[str, Any] = {"run_id": run.run_id, "jobs": jobs, "jobs_not_finished": not_final}
    status = _STATUS.get(attrs.get("status"))
    if status is not None:
        name = f"{attrs.get('name') or 'pipeline'} (pipeline)"
        result.update(
            run_outcome(source=source, ci_system=CI_SYSTEM, ref=ref, run=run, status=status, name=name, now=now)
        )
    if not jobs and status is None:
        return Handled(
            "ignored", f"pipeline status {attrs.get('status')!r} with no finished job: nothing to report", result
        )
    return Handled("processed", "", result)


def _build_outcome(build: dict, prefix: str, repository: str, payload: dict) -> JobOutcome | None:
    """A job of either hook; None until it has finished (created, pending, running, canceled, ...)."""
    raw_status = build.get(f"{prefix}status")
    status = _STATUS.get(raw_status)
    if status is None:
        return None
    job_id = need(build, f"{prefix}id", int)
    reason = build.get(f"{prefix}failure_reason") if status == JobStatus.FAILURE else None
    allowed = build.get(f"{prefix}allow_failure") is True and status == JobStatus.FAILURE
    runner = build.get("runner") if isinstance(build.get("runner"), dict) else payload.get("runner")
    web = _web_url(payload)
    return JobOutcome(
        name=need(build, f"{prefix}name"),
        status=status,
        log_excerpt=f"failure_reason: {reason}" if isinstance(reason, str) and reason else "",
        url=f"{web}/-/jobs/{job_id}" if web else "",
        runner=opt(runner, "description") if isinstance(runner, dict) else "",
        started_at=moment(build.get(f"{prefix}started_at")),
        finished_at=moment(build.get(f"{prefix}finished_at")),
        idempotency_key=f"gitlab-job:{repository}:{job_id}:{status}",
        fields={"stage": str(build.get(f"{prefix}stage") or ""), "failure_reason": str(reason or "")},
        record_only="allow_failure: recorded, opens nothing" if allowed else "",
    )


def _job_hook(source: IngestSource, payload: dict, now: datetime) -> Handled:
    prefix = "build_" if "build_status" in payload or "build_id" in payload else "job_"
    if f"{prefix}status" not in payload:
        raise MalformedPayload("the payload lacks build_status (or job_status)")
    outcome = _build_outcome(payload, prefix, _project_path(payload), payload)
    if outcome is None:
        return ignored(f"job status {payload.get(f'{prefix}status')!r} is not final: only success and failed count")
    repository = _project_path(payload)
    pipeline_id = need(payload, "pipeline_id", int)
    ref = RunRef(
        repository=repository,
        aliases=(f"gl-pipeline:{repository}:{pipeline_id}",),
        run_id=str(pipeline_id),
        attempt=1,
        branch=need(payload, "ref"),
        commit=opt(payload, "sha") or need(payload, "commit.sha"),
        default_branch=opt(payload, "project.default_branch"),
        commit_author=opt(payload, "commit.author_email") or opt(payload, "commit.author.email"),
    )
    default_branch_note(
        repository=repository, default_branch=ref.default_branch, actor=Actor.of_source(source), now=now
    )
    run = webhook_run(source=source, ref=ref, now=now)
    result = job_outcome(source=source, ci_system=CI_SYSTEM, ref=ref, run=run, job=outcome, now=now)
    return Handled("processed", "", {"run_id": run.run_id, "jobs": [result]})
