"""GitHub webhooks: workflow_job, check_run, workflow_run and check_suite, each mapped onto the one
run and job it reports, so one failed job reported by all four gives one failure.

Conclusions failure, timed_out, startup_failure and action_required are failures; success is a
success; cancelled, skipped, neutral and stale open nothing and are answered as ignored.
"""

import re
from datetime import datetime
from typing import Any

from escalation.choices import JobStatus
from escalation.exceptions import MalformedPayload
from escalation.models import IngestSource
from escalation.services.webhooks.common import (
    SUITE_RUN_PREFIX,
    Handled,
    JobOutcome,
    RunRef,
    WebhookAnswer,
    default_branch_note,
    ignored,
    job_outcome,
    log_limit,
    moment,
    need,
    opt,
    run_outcome,
    webhook_deliver,
    webhook_run,
)
from portal.audit import Actor

CI_SYSTEM = "github"
FAILING = frozenset({"failure", "timed_out", "startup_failure", "action_required"})
PASSING = frozenset({"success"})
HANDLED_EVENTS = ("workflow_job", "check_run", "workflow_run", "check_suite")


def github_webhook_handle(
    *, source: IngestSource, event: str, delivery_id: str, payload: Any, now: datetime
) -> WebhookAnswer:
    """Answer one verified GitHub delivery (see the module docstring)."""
    if not isinstance(payload, dict):
        raise MalformedPayload("the payload must be a JSON object")
    action = payload.get("action") if isinstance(payload.get("action"), str) else ""

    def handle() -> Handled:
        if event == "ping":
            return Handled("processed", "", {"pong": True, "zen": str(payload.get("zen", ""))[:200]})
        if event not in HANDLED_EVENTS:
            return ignored(f"event {event!r} is not handled; send {', '.join(HANDLED_EVENTS)} (and ping)")
        if action != "completed":
            return ignored(f"action {action!r} of {event} is not handled: only 'completed' reports an outcome")
        handler = {"workflow_job": _workflow_job, "check_run": _check_run}.get(event, _run_event)
        return handler(source, event, payload, now)

    return webhook_deliver(source=source, delivery_id=delivery_id, event=event, action=action, now=now, handle=handle)


def _status(conclusion: Any) -> str | None:
    if conclusion in FAILING:
        return JobStatus.FAILURE
    if conclusion in PASSING:
        return JobStatus.SUCCESS
    return None


def _repository(payload: dict) -> tuple[str, str]:
    return need(payload, "repository.full_name"), opt(payload, "repository.default_branch")


def _workflow_job(source: IngestSource, event: str, payload: dict, now: datetime) -> Handled:
    job = need(payload, "workflow_job", dict)
    conclusion = opt(job, "conclusion", None)
    status = _status(conclusion)
    if status is None:
        return ignored(f"conclusion {conclusion!r} opens nothing")
    repository, default_branch = _repository(payload)
    run_id, attempt = need(payload, "workflow_job.run_id", int), opt(job, "run_attempt", 1)
    check_run_id = _trailing_id(opt(job, "check_run_url")) or need(payload, "workflow_job.id", int)
    ref = RunRef(
        repository=repository,
        aliases=(f"gh-run:{repository}:{run_id}:{attempt}",),
        run_id=str(run_id),
        attempt=attempt if isinstance(attempt, int) and attempt > 0 else 1,
        branch=opt(job, "head_branch") or "(unknown)",
        commit=need(payload, "workflow_job.head_sha"),
        default_branch=default_branch,
    )
    failed_step = next(
        (s.get("name", "") for s in opt(job, "steps", []) if isinstance(s, dict) and s.get("conclusion") in FAILING),
        "",
    )
    labels = [label for label in opt(job, "labels", []) if isinstance(label, str)]
    outcome = JobOutcome(
        name=need(payload, "workflow_job.name"),
        status=status,
        step=failed_step if isinstance(failed_step, str) else "",
        url=opt(job, "html_url"),
        runner=",".join(labels) or opt(job, "runner_name"),
        started_at=moment(opt(job, "started_at")),
        finished_at=moment(opt(job, "completed_at")),
        fields={
            "conclusion": conclusion,
            "workflow": opt(job, "workflow_name"),
            "runner_name": opt(job, "runner_name"),
        },
    )
    return _job(source, ref, outcome, now, job_alias=f"gh-check-run:{repository}:{check_run_id}")


def _check_run(source: IngestSource, event: str, payload: dict, now: datetime) -> Handled:
    check = need(payload, "check_run", dict)
    conclusion = opt(check, "conclusion", None)
    status = _status(conclusion)
    if status is None:
        return ignored(f"conclusion {conclusion!r} opens nothing")
    repository, default_branch = _repository(payload)
    suite_id = need(payload, "check_run.check_suite.id", int)
    ref = RunRef(
        repository=repository,
        aliases=(f"gh-check-suite:{repository}:{suite_id}",),
        run_id=f"{SUITE_RUN_PREFIX}{suite_id}",
        attempt=1,
        branch=_branch(opt(check, "check_suite", {}), check),
        commit=need(payload, "check_run.head_sha"),
        default_branch=default_branch,
    )
    output = opt(check, "output", {})
    text = "\n".join(str(output[k]) for k in ("title", "summary", "text") if isinstance(output, dict) and output.get(k))
    outcome = JobOutcome(
        name=need(payload, "check_run.name"),
        status=status,
        log_excerpt=text[-log_limit() :],
        url=opt(check, "html_url"),
        started_at=moment(opt(check, "started_at")),
        finished_at=moment(opt(check, "completed_at")),
        fields={"conclusion": conclusion, "app": opt(check, "app.slug") or opt(check, "app.name")},
    )
    return _job(source, ref, outcome, now, job_alias=f"gh-check-run:{repository}:{need(payload, 'check_run.id', int)}")


def _job(source: IngestSource, ref: RunRef, outcome: JobOutcome, now: datetime, *, job_alias: str) -> Handled:
    default_branch_note(
        repository=ref.repository, default_branch=ref.default_branch, actor=Actor.of_source(source), now=now
    )
    run = webhook_run(source=source, ref=ref, now=now, job_alias=job_alias)
    result = job_outcome(source=source, ci_system=CI_SYSTEM, ref=ref, run=run, job=outcome, now=now)
    return Handled("processed", "", {"run_id": run.run_id, "attempt": run.attempt, "jobs": [result]})


def _run_event(source: IngestSource, event: str, payload: dict, now: datetime) -> Handled:
    """workflow_run and check_suite: the whole run's outcome."""
    body = need(payload, event, dict)
    conclusion = opt(body, "conclusion", None)
    status = _status(conclusion)
    if status is None:
        return ignored(f"conclusion {conclusion!r} opens nothing")
    repository, default_branch = _repository(payload)
    if event == "workflow_run":
        run_id, attempt = need(payload, f"{event}.id", int), opt(body, "run_attempt", 1)
        aliases = (
            f"gh-run:{repository}:{run_id}:{attempt}",
            f"gh-check-suite:{repository}:{body.get('check_suite_id')}",
        )
        name = body.get("name") or opt(payload, "workflow.name") or opt(body, "path") or "workflow"
        stand_in = f"{name} (workflow run)"
    else:
        run_id, attempt = f"{SUITE_RUN_PREFIX}{need(payload, f'{event}.id', int)}", 1
        aliases = (f"gh-check-suite:{repository}:{body['id']}",)
        stand_in = f"{opt(body, 'app.name') or 'check suite'} (check suite)"
    ref = RunRef(
        repository=repository,
        aliases=aliases,
        run_id=str(run_id),
        attempt=attempt if isinstance(attempt, int) and attempt > 0 else 1,
        branch=_branch(body, body),
        commit=need(payload, f"{event}.head_sha"),
        default_branch=default_branch,
        commit_author=opt(body, "head_commit.author.email"),
        url=opt(body, "html_url"),
    )
    default_branch_note(repository=repository, default_branch=default_branch, actor=Actor.of_source(source), now=now)
    run = webhook_run(source=source, ref=ref, now=now)
    result = run_outcome(
        source=source, ci_system=CI_SYSTEM, ref=ref, run=run, status=status, name=str(stand_in), now=now
    )
    return Handled("processed", "", {"run_id": run.run_id, "attempt": run.attempt, **result})


def _branch(suite: Any, item: dict) -> str:
    """The head branch; a pull request's head ref when GitHub leaves it out (forks)."""
    branch = opt(suite, "head_branch")
    if branch:
        return branch
    pulls = opt(item, "pull_requests", []) or opt(suite, "pull_requests", [])
    ref = opt(pulls[0], "head.ref") if isinstance(pulls, list) and pulls else ""
    return ref or "(unknown)"


def _trailing_id(url: Any) -> int | None:
    match = re.search(r"/(\d+)/?$", url) if isinstance(url, str) else None
    return int(match.group(1)) if match else None
