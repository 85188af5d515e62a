"""A failure's life: open or recur, acknowledge, resolve, recover, correct its type."""

import hashlib
from dataclasses import dataclass
from datetime import date, datetime

from django.db import IntegrityError, connection, transaction

from escalation.choices import OPEN_STATUSES, FailureStatus, FailureType, Resolution, TriageVerdict
from escalation.exceptions import FailureNotOpen, UnknownFailureType
from escalation.models import CIEvent, CIRun, Failure, FailureOccurrence, Person, Repository, TimelineEntry
from escalation.models.failures import OPEN_Q, TimelineKind
from escalation.services import escalation, routing, sla
from escalation.services.classification import Classification
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.signatures import error_signature
from escalation.services.statements import insert_from, insert_rows, insert_with_dependants
from portal.audit import Actor, audit_bulk, audit_entry, audit_record, row_state
from portal.errors import BadInput, InvalidState, RoleRequired
from portal.models import AuditAction


def failure_fingerprint(*, repository: str, branch: str, job: str, failure_type: str) -> str:
    """Stable across re-runs and attempts: the same job failing the same way is the same failure."""
    key = "\x1f".join((repository, branch, job, failure_type))
    return hashlib.sha256(key.encode()).hexdigest()


def require_permission(actor: Actor, permission: str) -> None:
    if actor.user is not None and not actor.user.has_perm(permission):
        raise RoleRequired(f"{actor.label} lacks the permission {permission}")


@dataclass(frozen=True)
class Reported:
    """What a failing CI event says, as the failure services need it."""

    repository: Repository
    run: CIRun
    event: CIEvent
    job_name: str
    seen_at: datetime
    classification: Classification


def failure_report(*, config: RoutingConfig, reported: Reported, actor: Actor, now: datetime) -> tuple[Failure, bool]:
    """Add an occurrence to the open failure with this fingerprint, or open one. True when opened.

    Runs inside the caller's transaction. Two events racing to open the same failure meet at the
    partial unique index: the loser's insert fails and it adds its occurrence to the winner's row.
    """
    fingerprint = failure_fingerprint(
        repository=reported.repository.name,
        branch=reported.run.branch,
        job=reported.job_name,
        failure_type=reported.classification.failure_type,
    )
    if connection.vendor == "postgresql":
        failure, opened = _report_in_one_statement(
            config=config, fingerprint=fingerprint, reported=reported, actor=actor, now=now
        )
        _with_owner(failure, config)
        return failure, opened
    failure = _recur(fingerprint, reported)
    opened = False
    if failure is None:
        try:
            with transaction.atomic():
                failure = _open(config=config, fingerprint=fingerprint, reported=reported, actor=actor, now=now)
                opened = True
        except IntegrityError:
            failure = _recur(fingerprint, reported)
            if failure is None:
                raise
    FailureOccurrence.objects.create(failure=failure, event=reported.event, seen_at=reported.seen_at)
    _with_owner(failure, config)
    return failure, opened


def _report_in_one_statement(
    *, config: RoutingConfig, fingerprint: str, reported: Reported, actor: Actor, now: datetime
) -> tuple[Failure, bool]:
    """PostgreSQL: the recurrence with its occurrence in one statement, else the new failure with its rows in one.

    An event that loses the race to open the fingerprint finds its insert doing nothing (the winner has
    committed by then, the partial unique index waited for it) and recurs on the winner's row.
    """
    failure = _recur(fingerprint, reported, with_occurrence=True)
    if failure is not None:
        return failure, False
    failure = _open_in_one_statement(config=config, fingerprint=fingerprint, reported=reported, actor=actor, now=now)
    if failure is not None:
        return failure, True
    failure = _recur(fingerprint, reported, with_occurrence=True)
    if failure is None:
        raise IntegrityError(f"no open failure {fingerprint} after a conflict on its open fingerprint")
    return failure, False


def failures_report_many(
    *, config: RoutingConfig, reported: list[Reported], actor: Actor, now: datetime
) -> list[tuple[Failure, bool]]:
    """failure_report for the many failing items of one upload (tests of a JUnit file, findings of a scan).

    The same rules in a few statements instead of several per item: lock the open failures of these
    fingerprints, insert the new ones with their timeline and audit entries, count the occurrences.
    A concurrent upload that opens one of the same fingerprints first makes the insert fail at the
    partial unique index; the batch then rolls back to its savepoint and goes item by item.
    """
    fingerprints = [
        failure_fingerprint(
            repository=item.repository.name,
            branch=item.run.branch,
            job=item.job_name,
            failure_type=item.classification.failure_type,
        )
        for item in reported
    ]
    try:
        with transaction.atomic():
            return _report_many(config, reported, fingerprints, actor, now)
    except IntegrityError:
        return [failure_report(config=config, reported=r, actor=actor, now=now) for r in reported]


def _report_many(
    config: RoutingConfig, reported: list[Reported], fingerprints: list[str], actor: Actor, now: datetime
) -> list[tuple[Failure, bool]]:
    wanted = sorted(set(fingerprints))
    failures = {f.fingerprint: f for f in Failure.objects.select_for_update().filter(OPEN_Q, fingerprint__in=wanted)}
    people: dict[str, object] = {}

    def person_of(author: str):
        if author not in people:
            people[author] = routing.person_for_author(author)
        return people[author]

    new: dict[str, tuple[Failure, tuple[str, dict]]] = {}
    for item, fingerprint in zip(reported, fingerprints, strict=True):
        if fingerprint not in failures and fingerprint not in new:
            new[fingerprint] = _new_failure(config=config, fingerprint=fingerprint, reported=item, person_of=person_of)
    Failure.objects.bulk_create([failure for failure, _ in new.values()])
    _opened(list(new.values()), actor=actor, now=now)
    failures.update({fingerprint: failure for fingerprint, (failure, _) in new.items()})
    answer, seen, recurred = [], set(), {}
    for item, fingerprint in zip(reported, fingerprints, strict=True):
        failure = failures[fingerprint]
        opened = fingerprint in new and fingerprint not in seen
        seen.add(fingerprint)
        if not opened:
            failure.occurrence_count += 1
            failure.last_seen_at = max(failure.last_seen_at, item.seen_at)
            failure.latest_run = item.run
            recurred[fingerprint] = failure
        answer.append((failure, opened))
    Failure.objects.bulk_update(list(recurred.values()), ["occurrence_count", "last_seen_at", "latest_run"])
    FailureOccurrence.objects.bulk_create(
        FailureOccurrence(failure=failures[fingerprint], event=item.event, seen_at=item.seen_at)
        for item, fingerprint in zip(reported, fingerprints, strict=True)
    )
    for failure in failures.values():
        if failure.owner_team_id in config.teams:
            failure.owner_team = config.teams[failure.owner_team_id]
    return answer


# What the receipt needs, in the model's field order as Model.from_db reads them (attname = column here).
_RECUR_RETURNED = {"id", "failure_type", "status", "owner_team_id", "sla_due_at", "occurrence_count", "fingerprint"}
_RECUR_FIELDS = [f.attname for f in Failure._meta.concrete_fields if f.attname in _RECUR_RETURNED]
# One statement counts the occurrence and returns what the receipt needs; the UPDATE takes the
# row lock itself. Ingestion runs it for every failing event, so it skips the ORM's read-modify-write.
_RECUR_SQL = (
    "UPDATE escalation_failure SET occurrence_count = occurrence_count + 1,"  # noqa: S608 - RETURNING names from _meta
    " last_seen_at = CASE WHEN last_seen_at > %s THEN last_seen_at ELSE %s END, latest_run_id = %s"
    " WHERE fingerprint = %s AND status IN (%s, %s)"
    " RETURNING " + ", ".join(_RECUR_FIELDS)
)


def _recur(fingerprint: str, reported: Reported, *, with_occurrence: bool = False) -> Failure | None:
    """Count an occurrence on the open failure with this fingerprint; PostgreSQL may store the occurrence row too."""
    seen_at = connection.ops.adapt_datetimefield_value(reported.seen_at)
    params = [seen_at, seen_at, reported.run.pk, fingerprint, *(status.value for status in OPEN_STATUSES)]
    if connection.vendor != "postgresql":  # SQLite's rows need the ORM's converters
        rows = list(Failure.objects.raw(_RECUR_SQL, params))  # the other fields load lazily if read
        return rows[0] if rows else None
    sql = _RECUR_SQL
    if with_occurrence:
        occurrence = FailureOccurrence(event=reported.event, seen_at=reported.seen_at)
        insert, occurrence_params = insert_from(occurrence, refs={"failure_id": "recurred.id"})
        returned = ", ".join(_RECUR_FIELDS)
        sql = f"WITH recurred AS ({sql}), occurrence AS ({insert}) SELECT {returned} FROM recurred"  # noqa: S608 - from _meta
        params += occurrence_params
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else Failure.from_db(connection.alias, _RECUR_FIELDS, row)  # the rest load lazily


def _open(*, config: RoutingConfig, fingerprint: str, reported: Reported, actor: Actor, now: datetime) -> Failure:
    failure, note = _new_failure(config=config, fingerprint=fingerprint, reported=reported)
    failure.save(force_insert=True)
    _opened([(failure, note)], actor=actor, now=now)
    return failure


# The first free id, taken before the insert: the audit entry's "after" and the receipt name it.
_NEXT_FAILURE_ID_SQL = "SELECT nextval(pg_get_serial_sequence('escalation_failure', 'id'))"


def _open_in_one_statement(
    *, config: RoutingConfig, fingerprint: str, reported: Reported, actor: Actor, now: datetime
) -> Failure | None:
    """PostgreSQL: insert the failure with its occurrence, 'opened' timeline entry and audit entry in one CTE.

    None when a concurrent event holds the open fingerprint: the insert waits for it at the partial
    unique index and then does nothing, and so do the rows that depend on it; no savepoint is needed.
    """
    failure, (message, data) = _new_failure(
        config=config, fingerprint=fingerprint, reported=reported, person_of=config.person_for
    )
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_FAILURE_ID_SQL)
        failure.pk = cursor.fetchone()[0]
    dependants = [
        FailureOccurrence(failure=failure, event=reported.event, seen_at=reported.seen_at),
        _timeline_entry(failure, now, TimelineKind.OPENED, actor, message, data),
        audit_entry(actor=actor, action=AuditAction.CREATE, obj=failure, at=now, after=row_state(failure)),
    ]
    statuses = [status.value for status in OPEN_STATUSES]
    on_conflict = f"ON CONFLICT (fingerprint) WHERE status IN ({', '.join(['%s'] * len(statuses))}) DO NOTHING"
    if not insert_with_dependants(failure, on_conflict=on_conflict, conflict_params=statuses, dependants=dependants):
        return None
    failure._state.adding, failure._state.db = False, connection.alias
    return failure


def _with_owner(failure: Failure, config: RoutingConfig) -> None:
    if failure.owner_team_id in config.teams:  # the receipt names the owner without another query
        failure.owner_team = config.teams[failure.owner_team_id]


def _new_failure(
    *, config: RoutingConfig, fingerprint: str, reported: Reported, person_of=routing.person_for_author
) -> tuple[Failure, tuple[str, dict]]:
    """The failure a report opens, not yet saved, with its 'opened' timeline message and data."""
    kind = reported.classification
    row = config.matrix[kind.failure_type]
    snapshot = routing.matrix_snapshot(row)
    run = reported.run
    route = routing.failure_route(
        config=config,
        snapshot=snapshot,
        repository=reported.repository,
        commit_author=run.commit_author,
        changed_files=run.changed_files,
        component=reported.job_name,
        person_of=person_of,
    )
    protected = reported.repository.is_protected(run.branch)
    opened_at = reported.seen_at
    owner_team = config.teams.get(route.owner_team_id)
    failure = Failure(
        failure_type=kind.failure_type,
        fingerprint=fingerprint,
        repository=reported.repository,
        branch=run.branch,
        job_name=reported.job_name,
        is_protected_branch=protected,
        owner_team_id=route.owner_team_id,
        secondary_team_id=route.secondary_team_id,
        assignee=route.assignee,
        first_seen_at=opened_at,
        last_seen_at=opened_at,
        latest_run=run,
        matrix_snapshot=snapshot,
        triage_due_at=sla.triage_due_at(opened_at=opened_at) if protected else None,
        classified_by=kind.classified_by,
        classification_rule_id=kind.rule_id,
        classification_rule_version=kind.rule_version,
        classification_text=kind.matched_text,
        classification_event=reported.event,
        tags=list(kind.tags),
        signature=error_signature(reported.event.log_excerpt),
    )
    sla.failure_deadlines(failure, team=owner_team)
    failure.next_step_at = escalation.next_step_at(failure, team=owner_team, done=set())
    owner = owner_team.name if owner_team else "nobody"
    branch_note = "" if protected else "; unprotected branch: recorded, never escalated"
    return failure, (
        f"Opened as {kind.failure_type} ({kind.classified_by}); owner {owner}{branch_note}",
        {
            "classified_by": kind.classified_by,
            "rule_version": kind.rule_version,
            "evidence": kind.matched_text,
            "tags": list(kind.tags),
        },
    )


def _opened(opened: list[tuple[Failure, tuple[str, dict]]], *, actor: Actor, now: datetime) -> None:
    """The 'opened' timeline entries and audit entries of saved new failures, in two inserts."""
    TimelineEntry.objects.bulk_create(
        TimelineEntry(
            failure=failure,
            at=now,
            kind=TimelineKind.OPENED,
            actor=actor.label,
            source=actor.source,
            message=message,
            data=data,
        )
        for failure, (message, data) in opened
    )
    audit_bulk(actor=actor, action=AuditAction.CREATE, changes=[(f, None, row_state(f)) for f, _ in opened], at=now)


def failures_recover(*, repository: Repository, branch: str, job_name: str, actor: Actor, now: datetime) -> list[int]:
    """The same job passed again: its open failures resolve as recovered."""
    failures = list(
        Failure.objects.select_for_update()
        .filter(OPEN_Q, repository=repository, branch=branch, job_name=job_name)
        .order_by("id")
    )
    _resolve(failures, resolution=Resolution.RECOVERED, note="the same job passed again", actor=actor, now=now)
    return [f.id for f in failures]


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
        _timeline_many(
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
    changes = []
    for failure in failures:
        before = row_state(failure)
        failure.status = FailureStatus.RESOLVED
        failure.resolution = resolution
        failure.resolved_at = now
        failure.resolved_by = actor.user
        failure.resolution_note = note
        changes.append((failure, before, row_state(failure)))
    # Every row gets the same values: one plain UPDATE, not bulk_update's CASE per row.
    Failure.objects.filter(pk__in=[f.pk for f in failures]).update(
        status=FailureStatus.RESOLVED,
        resolution=resolution,
        resolved_at=now,
        resolved_by=actor.user,
        resolution_note=note,
    )
    label = Resolution(resolution).label
    message = f"Resolved: {label}. {note}".strip()
    if connection.vendor != "postgresql":
        _timeline_many(failures, now, TimelineKind.RESOLVED, actor, message)
        audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=changes, at=now, reason=note)
        return
    # The timeline and audit entries in one statement (a recovery runs on every successful CI event).
    insert_rows(
        [_timeline_entry(failure, now, TimelineKind.RESOLVED, actor, message) for failure in failures]
        + [
            audit_entry(actor=actor, action=AuditAction.UPDATE, obj=f, at=now, before=before, after=after, reason=note)
            for f, before, after in changes
        ]
    )


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
        before, old_type = row_state(failure), failure.failure_type
        failure_retype(failure=failure, failure_type=failure_type, fingerprint=fingerprint, config=config)
        failure.classified_by = f"corrected by {actor.label}"
        failure.triage_verdict, failure.triaged_at, failure.triaged_by = TriageVerdict.CORRECTED, now, actor.user
        failure.save()
        rule = failure.classification_rule
        message = f"Type corrected from {old_type} to {failure_type}"
        if rule is not None:
            message += f"; rule {rule.name!r} marked wrong"
        data = {"from": old_type, "to": failure_type, "rule": rule.name if rule else None, "verdict": "corrected"}
        _timeline(failure, now, TimelineKind.TYPE_CORRECTED, actor, message, data)
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
    snapshot = routing.matrix_snapshot(config.matrix[failure_type])
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


def _timeline(failure: Failure, at: datetime, kind: str, actor: Actor, message: str, data: dict | None = None) -> None:
    _timeline_entry(failure, at, kind, actor, message, data).save()


def _timeline_entry(
    failure: Failure, at: datetime, kind: str, actor: Actor, message: str, data: dict | None = None
) -> TimelineEntry:
    return TimelineEntry(
        failure=failure,
        at=at,
        kind=kind,
        actor=actor.label,
        source=actor.source,
        message=message,
        data=data or {},
    )


def _timeline_many(failures: list[Failure], at: datetime, kind: str, actor: Actor, message: str) -> None:
    TimelineEntry.objects.bulk_create(
        TimelineEntry(failure=f, at=at, kind=kind, actor=actor.label, source=actor.source, message=message)
        for f in failures
    )


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
    _timeline(failure, now, TimelineKind.REPLACED_BY_JOB, actor, message, data)
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
        _timeline(failure, now, TimelineKind.MARKED_COMPLEX, actor,
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
        _timeline(failure, now, TimelineKind.PLAN_SET, actor, message,
                  {"plan": plan, "owner": owner.pk if owner and plan else None,
                   "due": due.isoformat() if due and plan else None})  # fmt: skip
        audit_record(actor=actor, action=AuditAction.UPDATE, obj=failure, at=now, before=before,
                     after=row_state(failure))  # fmt: skip
    return failure
