"""Failures as CI reports them: open one, or count another occurrence of the open one."""

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connection, transaction

from escalation.models import CIEvent, CIRun, Failure, FailureOccurrence, Repository, TimelineEntry
from escalation.models.failures import ONE_OPEN_FAILURE, OPEN_Q, OPEN_SQL, TimelineKind
from escalation.models.ingestion import EVENT_ONCE
from escalation.services import escalation, routing, sla
from escalation.services.classification import Classification
from escalation.services.config import RoutingConfig
from escalation.services.signatures import error_signature
from escalation.services.statements import (
    JsonText,
    Step,
    chain_ids,
    chain_parts,
    chain_stored,
    insert_chain,
    insert_dicts,
    insert_from,
    insert_many,
    insert_values,
    insert_with_dependants,
    prepared_cursor,
    statement_alone,
    unsaved,
    violated_constraint,
)
from escalation.services.timeline import timeline_entry, timeline_fields
from portal.audit import Actor, audit_entry, audit_values, row_state, row_state_json
from portal.models import AuditAction, AuditEntry


def failure_fingerprint(*, repository: str, branch: str, job: str, failure_type: str) -> str:
    """Stable across re-runs and attempts: the same job failing the same way is the same failure."""
    key = "\x1f".join((repository, branch, job, failure_type))
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Reported:
    """What a failing CI event says, as the failure services need it."""

    repository: Repository
    run: CIRun
    event: CIEvent
    job_name: str
    seen_at: datetime
    classification: Classification


def failure_report(
    *,
    config: RoutingConfig,
    reported: Reported,
    actor: Actor,
    now: datetime,
    stored_with: list[Step] | None = None,
    store_if: tuple[str, list] = ("TRUE", []),
) -> tuple[Failure, bool] | None:
    """Add an occurrence to the open failure with this fingerprint, or open one. True when opened.

    Runs inside the caller's transaction, if any (ingestion's statements need none). Two events racing to
    open the same failure meet at the partial unique index: the loser's insert fails and it adds its
    occurrence to the winner's row.
    ``stored_with`` (PostgreSQL; ingestion's run, job and event, the event last) stores the reporting
    event's rows in the same statements as its occurrence, only where ``store_if`` (an SQL condition and
    its parameters) holds; None when they were not stored (a duplicate). See _report_with_event.
    """
    fingerprint = failure_fingerprint(
        repository=reported.repository.name,
        branch=reported.run.branch,
        job=reported.job_name,
        failure_type=reported.classification.failure_type,
    )
    if connection.vendor == "postgresql":
        if stored_with is None:
            answer = _report_in_one_statement(
                config=config, fingerprint=fingerprint, reported=reported, actor=actor, now=now
            )
        else:
            answer = _report_with_event(
                config=config, fingerprint=fingerprint, reported=reported, actor=actor, now=now,
                stored_with=stored_with, store_if=store_if,
            )  # fmt: skip
        if answer is not None:
            _with_owner(answer[0], config)
        return answer
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
    """PostgreSQL, an item of an upload: the recurrence with its occurrence in one statement, else the new
    failure with its rows in one.

    An item that loses the race to open the fingerprint finds its insert doing nothing (the winner has
    committed by then, the partial unique index waited for it) and recurs on the winner's row.
    """
    failure, failure_id = _recur_or_reserve(fingerprint, reported)
    if failure is not None:
        return failure, False
    failure = _open_in_one_statement(
        config=config, fingerprint=fingerprint, reported=reported, actor=actor, now=now, failure_id=failure_id
    )
    if failure is not None:
        return failure, True
    failure = _recur(fingerprint, reported, with_occurrence=True)
    if failure is None:
        raise IntegrityError(f"no open failure {fingerprint} after a conflict on its open fingerprint")
    return failure, False


_OPEN_ATTEMPTS = 3


def _report_with_event(
    *,
    config: RoutingConfig,
    fingerprint: str,
    reported: Reported,
    actor: Actor,
    now: datetime,
    stored_with: list[Step],
    store_if: tuple[str, list],
) -> tuple[Failure, bool] | None:
    """PostgreSQL ingestion: one statement for a recurrence, two for a new failure, and no BEGIN or COMMIT
    when the caller has no transaction (each statement is then its own; elsewhere each is a savepoint).

    The first statement locks the open failure with this fingerprint and, only if there is one, stores the
    event's rows with their occurrence; otherwise it stores nothing and takes the new failure's id. The
    second stores the event's rows with the new failure and its occurrence, timeline and audit entries.
    Either fails as a whole when a concurrent delivery of the same event stored it first (the event is a
    duplicate: None) and the second when a concurrent event opened the failure first (the first then
    recurs on that one). So an event is stored whole or not at all, as in one transaction.
    """
    for _ in range(_OPEN_ATTEMPTS):
        try:
            with statement_alone():
                failure, failure_id = _recur_or_reserve(fingerprint, reported, stored_with, store_if)
            if failure is not None:
                return failure, False
            if failure_id is None:  # a duplicate of a stored event
                return None
            with statement_alone():
                return _open_with_event(config, fingerprint, reported, actor, now, failure_id, stored_with), True
        except IntegrityError as error:
            violated = violated_constraint(error)
            if violated == EVENT_ONCE:  # a concurrent delivery of the event stored it first
                return None
            if violated != ONE_OPEN_FAILURE:  # else a concurrent event opened the failure first: recur on it
                raise
    raise IntegrityError(f"failure {fingerprint} opened and resolved under this event {_OPEN_ATTEMPTS} times")


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
    failures = {
        f.fingerprint: f for f in Failure.objects.select_for_update().filter(OPEN_Q, fingerprint__in_array=wanted)
    }
    people: dict[str, object] = {}

    def person_of(author: str):
        if author not in people:
            people[author] = routing.person_for_author(author)
        return people[author]

    new: dict[str, tuple[Failure, tuple[str, dict]]] = {}
    for item, fingerprint in zip(reported, fingerprints, strict=True):
        if fingerprint not in failures and fingerprint not in new:
            new[fingerprint] = _new_failure(config=config, fingerprint=fingerprint, reported=item, person_of=person_of)
    insert_many([failure for failure, _ in new.values()], keys_needed=True)
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
    insert_values(
        FailureOccurrence,
        ["failure_id", "event_id", "seen_at"],
        [
            (failures[fingerprint].pk, item.event.pk, item.seen_at)
            for item, fingerprint in zip(reported, fingerprints, strict=True)
        ],
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
_RECUR_UPDATE = (
    "UPDATE escalation_failure SET occurrence_count = occurrence_count + 1,"  # noqa: S608 - statuses: the code's constants
    " last_seen_at = CASE WHEN last_seen_at > %s THEN last_seen_at ELSE %s END, latest_run_id = {run}"
    f" WHERE fingerprint = %s AND {OPEN_SQL}"
)
_RECUR_RETURNING = " RETURNING " + ", ".join(_RECUR_FIELDS)
_RECUR_SQL = _RECUR_UPDATE.format(run="%s") + _RECUR_RETURNING


def _recur_params(fingerprint: str, reported: Reported, *run_id: int) -> list:
    """_RECUR_UPDATE's parameters; the run's id among them unless the statement names the run itself."""
    seen_at = connection.ops.adapt_datetimefield_value(reported.seen_at)
    return [seen_at, seen_at, *run_id, fingerprint]


def _recur(fingerprint: str, reported: Reported, *, with_occurrence: bool = False) -> Failure | None:
    """Count an occurrence on the open failure with this fingerprint; PostgreSQL may store the occurrence row too."""
    params = _recur_params(fingerprint, reported, reported.run.pk)
    if connection.vendor != "postgresql":  # SQLite's rows need the ORM's converters
        rows = list(Failure.objects.raw(_RECUR_SQL, params))  # the other fields load lazily if read
        return rows[0] if rows else None
    sql = _RECUR_SQL
    if with_occurrence:
        occurrence = unsaved(FailureOccurrence, event=reported.event, seen_at=reported.seen_at)
        insert, occurrence_params = insert_from(occurrence, refs={"failure_id": "recurred.id"})
        returned = ", ".join(_RECUR_FIELDS)
        sql = f"WITH recurred AS ({sql}), occurrence AS ({insert}) SELECT {returned} FROM recurred"  # noqa: S608 - from _meta
        params += occurrence_params
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else Failure.from_db(connection.alias, _RECUR_FIELDS, row)  # the rest load lazily


def _recur_or_reserve(
    fingerprint: str,
    reported: Reported,
    stored_with: list[Step] | None = None,
    store_if: tuple[str, list] = ("TRUE", []),
) -> tuple[Failure | None, int | None]:
    """PostgreSQL, one statement: count an occurrence on the open failure with this fingerprint, or else take
    the id the new failure will have. (None, None): ``store_if`` did not hold.

    With ``stored_with`` (the event's rows, see _report_with_event) the open failure is locked first, and
    the rows are stored only if it is there and ``store_if`` holds: with the occurrence, or not at all.
    """
    stored_with = stored_with or []
    if not stored_with:
        parts, params = [], _recur_params(fingerprint, reported, reported.run.pk)
        run, refs, stored, reserve, reserve_params = "%s", {"failure_id": "recurred.id"}, "TRUE", "TRUE", []
    else:
        run_alias, event_alias = _chain_aliases(stored_with, reported)
        condition, condition_params = store_if
        chain, chain_params = chain_parts(stored_with, gate="gate")
        parts = [
            f"open_failure AS (SELECT id FROM escalation_failure WHERE fingerprint = %s AND {OPEN_SQL} FOR UPDATE)",  # noqa: S608
            f"gate AS (SELECT 1 WHERE EXISTS (SELECT 1 FROM open_failure) AND {condition})",  # noqa: S608 - the caller's
            *chain,
        ]
        params = [fingerprint, *condition_params, *chain_params, *_recur_params(fingerprint, reported)]
        run = f"(SELECT id FROM {run_alias})"  # noqa: S608 - the caller's aliases
        refs = {"failure_id": "recurred.id", "event_id": f"{event_alias}.id"}
        stored = f"EXISTS (SELECT 1 FROM {event_alias})"  # noqa: S608 - the caller's aliases
        reserve, reserve_params = f"NOT EXISTS (SELECT 1 FROM open_failure) AND {condition}", condition_params  # noqa: S608
    occurrence, occurrence_params = insert_from(
        unsaved(FailureOccurrence, event=reported.event, seen_at=reported.seen_at), refs=refs
    )
    parts += [
        f"recurred AS ({_RECUR_UPDATE.format(run=run)} AND {stored}{_RECUR_RETURNING})",
        f"occurrence AS ({occurrence})",
    ]
    params += occurrence_params + reserve_params
    returned = ", ".join(f"recurred.{name}" for name in _RECUR_FIELDS)
    ids = chain_ids(stored_with)
    sql = (
        "WITH " + ", ".join(parts) + f" SELECT {ids + ', ' if ids else ''}{returned},"  # noqa: S608 - from _meta
        f" CASE WHEN recurred.id IS NULL AND {reserve} THEN {_NEXT_FAILURE_ID} END"
        " FROM (SELECT) AS one LEFT JOIN recurred ON TRUE"
    )
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    chain_stored(stored_with, list(row[: len(stored_with)]))
    recurred = row[len(stored_with) : -1]
    if recurred[_RECUR_FIELDS.index("id")] is not None:
        return Failure.from_db(connection.alias, _RECUR_FIELDS, recurred), None  # the rest load lazily
    return None, row[-1]


def _open(*, config: RoutingConfig, fingerprint: str, reported: Reported, actor: Actor, now: datetime) -> Failure:
    failure, note = _new_failure(config=config, fingerprint=fingerprint, reported=reported)
    failure.save(force_insert=True)
    _opened([(failure, note)], actor=actor, now=now)
    return failure


# The partial unique index's predicate as literals: PostgreSQL picks the arbiter index when it plans the
# statement, before parameters are bound. The statuses are the code's own constants.
_ON_OPEN_CONFLICT = f"ON CONFLICT (fingerprint) WHERE {OPEN_SQL} DO NOTHING"
# The new failure's id, taken before its insert: the audit entry's "after" and the receipt name it.
_NEXT_FAILURE_ID = "nextval(pg_get_serial_sequence('escalation_failure', 'id'))"


def _open_in_one_statement(
    *, config: RoutingConfig, fingerprint: str, reported: Reported, actor: Actor, now: datetime, failure_id: int
) -> Failure | None:
    """PostgreSQL: insert the failure with its occurrence, 'opened' timeline entry and audit entry in one CTE.

    None when a concurrent event holds the open fingerprint: the insert waits for it at the partial
    unique index and then does nothing, and so do the rows that depend on it; no savepoint is needed.
    """
    failure, (message, data) = _new_failure(
        config=config, fingerprint=fingerprint, reported=reported, person_of=config.person_for
    )
    failure.pk = failure_id
    dependants = [
        unsaved(FailureOccurrence, failure=failure, event=reported.event, seen_at=reported.seen_at),
        timeline_entry(failure, now, TimelineKind.OPENED, actor, message, data),
        audit_entry(actor=actor, action=AuditAction.CREATE, obj=failure, at=now, after=row_state(failure)),
    ]
    if not insert_with_dependants(failure, on_conflict=_ON_OPEN_CONFLICT, dependants=dependants):
        return None
    failure._state.adding, failure._state.db = False, connection.alias
    return failure


def _open_with_event(
    config: RoutingConfig,
    fingerprint: str,
    reported: Reported,
    actor: Actor,
    now: datetime,
    failure_id: int,
    stored_with: list[Step],
) -> Failure:
    """PostgreSQL, one statement: the event's rows, then the new failure (its id taken before) with its
    occurrence and its 'opened' timeline and audit entries. Fails as a whole on a unique violation."""
    failure, (message, data) = _new_failure(
        config=config, fingerprint=fingerprint, reported=reported, person_of=config.person_for
    )
    failure.pk = failure_id
    run_alias, event_alias = _chain_aliases(stored_with, reported)
    ids, after = _opened_refs(run_alias, event_alias)
    audit = audit_entry(actor=actor, action=AuditAction.CREATE, obj=failure, at=now, after=row_state(failure))
    insert_chain(
        [
            *stored_with,
            ("failure", failure, ids, ""),
            ("occurrence", unsaved(FailureOccurrence, failure=failure, seen_at=reported.seen_at),
             {"event_id": f"{event_alias}.id"}, ""),
            ("timeline", timeline_entry(failure, now, TimelineKind.OPENED, actor, message, data), {}, ""),
            ("audit", audit, {"after": after}, ""),
        ]
    )  # fmt: skip
    return failure


def _chain_aliases(stored_with: list[Step], reported: Reported) -> tuple[str, str]:
    """The aliases of the reporting event's run and of the event (the chain's last row) in ``stored_with``."""
    event_alias, event, _, _ = stored_with[-1]
    assert event is reported.event, "the chain's last row is the reporting event"
    return next(alias for alias, row, _, _ in stored_with if row is reported.run), event_alias


@functools.cache
def _opened_refs(run_alias: str, event_alias: str) -> tuple[dict[str, str], str]:
    """The new failure's refs to the run's and the event's ids, taken in the same statement, and the SQL of
    its audit entry's ``after`` with those ids in it (``row_state`` names them by field name)."""
    ids = {"latest_run_id": f"{run_alias}.id", "classification_event_id": f"{event_alias}.id"}
    in_state = ", ".join(f"'{Failure._meta.get_field(attname).name}', {ref}" for attname, ref in ids.items())
    return ids, f"r.{connection.ops.quote_name('after')} || jsonb_build_object({in_state})"


def _with_owner(failure: Failure, config: RoutingConfig) -> None:
    if failure.owner_team_id in config.teams:  # the receipt names the owner without another query
        failure.owner_team = config.teams[failure.owner_team_id]


def _new_failure(
    *, config: RoutingConfig, fingerprint: str, reported: Reported, person_of=routing.person_for_author
) -> tuple[Failure, tuple[str, dict]]:
    """The failure a report opens, not yet saved, with its 'opened' timeline message and data."""
    kind = reported.classification
    snapshot = config.snapshot(kind.failure_type)
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
    failure = unsaved(
        Failure,
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
    """The 'opened' timeline entries and audit entries of saved new failures, in two inserts of value rows
    (no model instances: an upload may open thousands)."""
    insert_dicts(
        TimelineEntry,
        [
            {"failure_id": failure.pk, **timeline_fields(now, TimelineKind.OPENED, actor, message, data)}
            for failure, (message, data) in opened
        ],
    )
    insert_dicts(
        AuditEntry,
        [
            audit_values(actor=actor, action=AuditAction.CREATE, obj=f, at=now, after=JsonText(row_state_json(f)))
            for f, _ in opened
        ],
    )
