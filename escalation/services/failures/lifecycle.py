"""A failure's life after it opened: acknowledge, resolve, recover, correct its type, plan, mark complex."""

from datetime import date, datetime

from django.db import connection, transaction

from escalation.choices import FailureStatus, FailureType, Resolution, TriageVerdict
from escalation.exceptions import FailureNotOpen, UnknownFailureType
from escalation.models import Failure, Person, Repository
from escalation.models.failures import OPEN_Q, OPEN_SQL, TimelineKind
from escalation.services import routing, sla
from escalation.services.classification import Classification
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.failures.reporting import failure_fingerprint
from escalation.services.signatures import error_signature
from escalation.services.statements import (
    Step,
    chain_ids,
    chain_parts,
    chain_stored,
    insert_from,
    insert_rows,
    prepared_cursor,
    rows_locked,
    update_by_ids,
)
from escalation.services.timeline import timeline_add, timeline_add_many, timeline_entry
from portal.audit import Actor, audit_bulk, audit_entry, audit_record, row_state
from portal.errors import BadInput, InvalidState, RoleRequired
from portal.models import AuditAction


def require_permission(actor: Actor, permission: str) -> None:
    if actor.user is not None and not actor.user.has_perm(permission):
        raise RoleRequired(f"{actor.label} lacks the permission {permission}")


RECOVERED_NOTE = "the same job passed again"


def failures_recover(*, repository: Repository, branch: str, job_name: str, actor: Actor, now: datetime) -> list[int]:
    """The same job passed again: its open failures resolve as recovered."""
    failures = rows_locked(Failure, OPEN_FOR_JOB, [repository.pk, branch, job_name])
    _resolve(failures, resolution=Resolution.RECOVERED, note=RECOVERED_NOTE, actor=actor, now=now)
    return [f.id for f in failures]


# A job's open failures (by repository id, branch and job name): every successful CI event asks, in a
# prepared statement; the partial index on open jobs serves it.
OPEN_FOR_JOB = f"repository_id = %s AND branch = %s AND job_name = %s AND {OPEN_SQL}"


def failures_acknowledge(*, failure_ids: list[int], actor: Actor, now: datetime, note: str = "") -> int:
    require_permission(actor, "escalation.acknowledge_failure")
    with transaction.atomic():
        failures = list(
            Failure.objects.select_for_update().filter(id__in=failure_ids, status=FailureStatus.OPEN).order_by("id")
        )
        changes = []
        for failure in failures:
            before = row_state(failure)
            failure.status = FailureStatus.ACKNOWLEDGED
            failure.acknowledged_at = now
            failure.acknowledged_by = actor.user
            changes.append((failure, before, row_state(failure)))
        Failure.objects.bulk_update(failures, ["status", "acknowledged_at", "acknowledged_by"])
        timeline_add_many(
            failures, now, TimelineKind.ACKNOWLEDGED, actor, f"Acknowledged by {actor.label}. {note}".strip()
        )
        audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=changes, at=now, reason=note)
    return len(failures)


def failures_resolve(
    *, failure_ids: list[int], resolution: Resolution, actor: Actor, now: datetime, note: str = ""
) -> int:
    require_permission(actor, "escalation.resolve_failure")
    with transaction.atomic():
        # A detected secret resolves only through its confirmed credential rotation (services/rotations.py).
        failures = list(
            Failure.objects.select_for_update(of=("self",))
            .filter(OPEN_Q, id__in=failure_ids)
            .exclude(credential_rotation__status="open")
            .order_by("id")
        )
        _resolve(failures, resolution=resolution, note=note, actor=actor, now=now)
    return len(failures)


def _resolve(failures: list[Failure], *, resolution: Resolution, note: str, actor: Actor, now: datetime) -> None:
    if not failures:
        return
    resolved, changes, message = _resolution(failures, resolution=resolution, note=note, actor=actor, now=now)
    ids = [f.pk for f in failures]
    if connection.vendor != "postgresql":
        Failure.objects.filter(pk__in=ids).update(**resolved)
        timeline_add_many(failures, now, TimelineKind.RESOLVED, actor, message)
        audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=changes, at=now, reason=note)
        return
    # The update with its timeline and audit entries in one statement (a recovery runs on CI's successes).
    insert_rows(
        _resolution_rows(changes, message=message, note=note, actor=actor, now=now),
        first=update_by_ids(Failure, resolved, ids),
    )


def _resolution(
    failures: list[Failure], *, resolution: Resolution, note: str, actor: Actor, now: datetime
) -> tuple[dict, list[tuple[Failure, dict, dict]], str]:
    """What resolving these failures sets (they take it), each one's state before and after, and the
    timeline message."""
    # Every row gets the same values (one plain UPDATE, not bulk_update's CASE per row).
    resolved = {
        "status": FailureStatus.RESOLVED,
        "resolution": resolution,
        "resolved_at": now,
        "resolved_by_id": None if actor.user is None else actor.user.pk,
        "resolution_note": note,
    }
    changes = []
    for failure in failures:
        before = row_state(failure)
        for attname, value in resolved.items():
            setattr(failure, attname, value)
        changes.append((failure, before, row_state(failure)))
    message = f"Resolved: {Resolution(resolution).label}. {note}".strip()
    return resolved, changes, message


def _resolution_rows(
    changes: list[tuple[Failure, dict, dict]], *, message: str, note: str, actor: Actor, now: datetime
) -> list:
    """The timeline and audit entries of a resolution, not yet stored."""
    return [timeline_entry(failure, now, TimelineKind.RESOLVED, actor, message) for failure, _, _ in changes] + [
        audit_entry(actor=actor, action=AuditAction.UPDATE, obj=f, at=now, before=before, after=after, reason=note)
        for f, before, after in changes
    ]


class FailuresChanged(Exception):
    """A failure changed between the statement that read it and the one that would have resolved it."""


def failures_recover_with_event(
    found: list[tuple[Failure, str]],
    *,
    stored_with: list[Step],
    store_if: tuple[str, list],
    actor: Actor,
    now: datetime,
) -> list[int] | None:
    """PostgreSQL, one statement that needs no transaction: a success's rows (``stored_with``: its run, job
    and event, the event last) stored with the recovery of its job's open failures, which a statement before
    read (``found``: each failure with its row version, ``xmin``).

    Stores anything only when ``store_if`` (SQL and its parameters) holds and no failure in ``found`` changed
    since it was read: the failures are locked in the statement and compared with their versions, so a
    concurrent acknowledgement, resolution or recurrence makes it store nothing and raise FailuresChanged
    (the caller reads them again). Returns the recovered ids, or None when ``store_if`` did not hold.
    """
    failures = [failure for failure, _ in found]
    versions = [f"{failure.pk}:{version}" for failure, version in found]
    ids = [failure.pk for failure in failures]
    resolved, changes, message = _resolution(
        failures, resolution=Resolution.RECOVERED, note=RECOVERED_NOTE, actor=actor, now=now
    )
    condition, condition_params = store_if
    chain, chain_params = chain_parts(stored_with, gate="gate")
    event_alias = stored_with[-1][0]
    update, update_params = update_by_ids(Failure, resolved, ids, gate=event_alias)
    parts = [
        # Locked in id order; a row another transaction changes meanwhile fails the version check once
        # its lock is released.
        "locked AS (SELECT id FROM escalation_failure WHERE id = ANY(%s)"
        " AND (id::text || ':' || xmin::text) = ANY(%s) ORDER BY id FOR UPDATE)",
        f"gate AS (SELECT 1 WHERE (SELECT count(*) FROM locked) = %s AND {condition})",  # noqa: S608 - the caller's
        *chain,
        f"resolved AS ({update})",
    ]
    params = [ids, versions, len(found), *condition_params, *chain_params, *update_params]
    for n, row in enumerate(_resolution_rows(changes, message=message, note=RECOVERED_NOTE, actor=actor, now=now)):
        insert, row_params = insert_from(row, refs={}, gate=event_alias)
        parts.append(f"entry{n} AS ({insert})")
        params += row_params
    sql = "WITH " + ", ".join(parts) + f" SELECT {chain_ids(stored_with)}, (SELECT count(*) FROM locked)"  # noqa: S608
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        *stored, locked = cursor.fetchone()
    chain_stored(stored_with, stored)
    if stored[-1] is not None:
        return ids
    if locked != len(found):
        raise FailuresChanged
    return None


def failure_correct_type(*, failure_id: int, failure_type: str, actor: Actor, now: datetime) -> Failure:
    """QA's correction: new type, new matrix snapshot and owner; the SLA still counts from the opening.

    The correction counts against the rule that decided the old type (its precision), which stays
    recorded on the failure; the failure leaves the triage queue.
    """
    require_permission(actor, "escalation.correct_failure_type")
    if failure_type not in FailureType.values:
        raise UnknownFailureType(f"{failure_type!r} is not a failure type")
    config = routing_config()
    with transaction.atomic():
        failure = (
            Failure.objects.select_for_update(of=("self",))
            .select_related("repository", "latest_run", "classification_rule")
            .get(pk=failure_id)
        )
        if not failure.is_open:
            raise FailureNotOpen(f"failure {failure_id} is resolved")
        fingerprint = failure_fingerprint(
            repository=failure.repository.name, branch=failure.branch, job=failure.job_name, failure_type=failure_type
        )
        twin = failure_open_twin(failure=failure, fingerprint=fingerprint)
        if twin is not None:
            raise InvalidState(f"failure {twin.pk} is already open as {failure_type} for this job; resolve one first")
        before, old_type, old_team = row_state(failure), failure.failure_type, failure.owner_team_id
        failure_retype(failure=failure, failure_type=failure_type, fingerprint=fingerprint, config=config)
        failure.classified_by = f"corrected by {actor.label}"
        failure.triage_verdict, failure.triaged_at, failure.triaged_by = TriageVerdict.CORRECTED, now, actor.user
        failure.save()
        rule = failure.classification_rule
        message = f"Type corrected from {old_type} to {failure_type}"
        if rule is not None:
            message += f"; rule {rule.name!r} marked wrong"
        data = {"from": old_type, "to": failure_type, "rule": rule.name if rule else None, "verdict": "corrected"}
        data.update(from_team=old_team, to_team=failure.owner_team_id)  # fallout: reassigned between teams
        timeline_add(failure, now, TimelineKind.TYPE_CORRECTED, actor, message, data)
        audit_record(
            actor=actor, action=AuditAction.UPDATE, obj=failure, at=now, before=before, after=row_state(failure)
        )
    return failure


def failure_open_twin(*, failure: Failure, fingerprint: str) -> Failure | None:
    """Another open failure with this fingerprint: the failure cannot take it while that one is open."""
    return Failure.objects.filter(OPEN_Q, fingerprint=fingerprint).exclude(pk=failure.pk).first()


def failure_retype(*, failure: Failure, failure_type: str, fingerprint: str, config: RoutingConfig) -> None:
    """Give an open failure a new type: the type's matrix snapshot, owners and SLA, counted from the opening.

    Changes the row in memory only; the caller saves it, with the timeline and audit entries.
    """
    snapshot = config.snapshot(failure_type)
    run = failure.latest_run
    route = routing.failure_route(
        config=config,
        snapshot=snapshot,
        repository=failure.repository,
        commit_author=run.commit_author,
        changed_files=run.changed_files,
        component=failure.job_name,
    )
    failure.failure_type, failure.fingerprint, failure.matrix_snapshot = failure_type, fingerprint, snapshot
    failure.owner_team_id, failure.secondary_team_id = route.owner_team_id, route.secondary_team_id
    failure.assignee = route.assignee or failure.assignee
    _reschedule(failure, team=config.teams.get(route.owner_team_id))


def _reschedule(failure: Failure, *, team) -> None:
    """New deadlines (from the opening, plus the paused time so far); the sweep works out the next step."""
    sla.failure_deadlines(failure, team=team, paused=sla.paused_total(failure))
    failure.next_step_at = failure.first_seen_at if failure.is_protected_branch else None


def failure_run_level_replace(
    *,
    failure: Failure,
    job_name: str,
    classification: Classification,
    log_excerpt: str,
    config: RoutingConfig,
    actor: Actor,
    now: datetime,
) -> bool:
    """Turn an open run-level failure into the failure of its run's first failed job, so that one failed
    job stays one failure: the job's name, type, fingerprint, snapshot and owners; the SLA still counts
    from the run-level opening. False, changing nothing, when the job's failure is open already (an
    earlier run): the caller then resolves the run-level failure as superseded.
    """
    fingerprint = failure_fingerprint(
        repository=failure.repository.name,
        branch=failure.branch,
        job=job_name,
        failure_type=classification.failure_type,
    )
    if failure_open_twin(failure=failure, fingerprint=fingerprint) is not None:
        return False
    before, old_job, old_type = row_state(failure), failure.job_name, failure.failure_type
    failure.job_name = job_name
    failure_retype(failure=failure, failure_type=classification.failure_type, fingerprint=fingerprint, config=config)
    failure.classified_by, failure.classification_rule_id = classification.classified_by, classification.rule_id
    failure.classification_rule_version = classification.rule_version
    failure.classification_text, failure.tags = classification.matched_text, list(classification.tags)
    failure.signature = error_signature(log_excerpt)
    failure.triage_verdict, failure.triaged_at, failure.triaged_by = "", None, None  # a new type, not yet triaged
    failure.save()
    message = f"Replaced by job {job_name}: {old_job} ({old_type}) is now {job_name} ({failure.failure_type})"
    data = {"from_job": old_job, "to_job": job_name, "from": old_type, "to": failure.failure_type,
            "classified_by": classification.classified_by}  # fmt: skip
    timeline_add(failure, now, TimelineKind.REPLACED_BY_JOB, actor, message, data)
    audit_record(actor=actor, action=AuditAction.UPDATE, obj=failure, at=now, before=before, after=row_state(failure))
    return True


def failure_mark_complex(*, failure_id: int, actor: Actor, now: datetime, note: str = "") -> Failure:
    """A database test marked complex runs on its matrix row's complex budget (8 hours by default)."""
    require_permission(actor, "escalation.mark_failure_complex")
    config = routing_config()
    with transaction.atomic():
        failure = Failure.objects.select_for_update().get(pk=failure_id)
        if not failure.is_open:
            raise FailureNotOpen(f"failure {failure_id} is resolved")
        if not failure.matrix_snapshot.get("complex_sla_budget"):
            raise InvalidState(f"a {failure.failure_type} failure has no complex SLA budget in its matrix row")
        if failure.is_complex:
            return failure
        before = row_state(failure)
        failure.is_complex = True
        _reschedule(failure, team=config.teams.get(failure.owner_team_id))
        failure.save()
        due = f"{failure.sla_due_at:%Y-%m-%d %H:%M %Z}" if failure.sla_due_at else "none (unprotected branch)"
        hours = failure.matrix_snapshot["complex_sla_budget"] / 3600
        timeline_add(failure, now, TimelineKind.MARKED_COMPLEX, actor,
                  f"Marked complex: SLA budget {hours:g} h, due {due}. {note}".strip(),
                  {"sla_due_at": failure.sla_due_at.isoformat() if failure.sla_due_at else None})  # fmt: skip
        audit_record(actor=actor, action=AuditAction.UPDATE, obj=failure, at=now, before=before,
                     after=row_state(failure), reason=note)  # fmt: skip
    return failure


def failure_plan_set(
    *, failure_id: int, plan: str, owner: Person | None, due: date | None, actor: Actor, now: datetime
) -> Failure:
    """Record how the failure will be resolved, by whom and when. A breached failure with a plan is not
    taken to the Scrum Master at standup (level 2); an empty plan clears it."""
    require_permission(actor, "escalation.set_resolution_plan")
    plan = plan.strip()
    if plan and due is not None and due < now.date():
        raise BadInput(f"the plan's due date {due} is in the past")
    with transaction.atomic():
        failure = Failure.objects.select_for_update().get(pk=failure_id)
        if not failure.is_open:
            raise FailureNotOpen(f"failure {failure_id} is resolved")
        before = row_state(failure)
        failure.resolution_plan = plan
        failure.resolution_plan_owner = owner if plan else None
        failure.resolution_plan_due = due if plan else None
        if failure.is_protected_branch:
            failure.next_step_at = now  # clearing a plan may bring level 2 back
        failure.save()
        owner_text = f", owner {owner}" if owner and plan else ""
        due_text = f", due {due}" if due and plan else ""
        message = f"Resolution plan: {plan}{owner_text}{due_text}" if plan else "Resolution plan cleared"
        timeline_add(failure, now, TimelineKind.PLAN_SET, actor, message,
                  {"plan": plan, "owner": owner.pk if owner and plan else None,
                   "due": due.isoformat() if due and plan else None})  # fmt: skip
        audit_record(actor=actor, action=AuditAction.UPDATE, obj=failure, at=now, before=before,
                     after=row_state(failure))  # fmt: skip
    return failure
