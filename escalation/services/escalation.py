"""The escalation ladder: the SLA sweep claims failures with a step due and takes each step once.

Every rung of DESIGN.md's ladder is a due time computed from the failure's own columns
(``ladder_steps``); ``next_step_at`` is the earliest one not yet taken, the only column the sweep
reads to find work. A step taken is an ``Escalation`` row (unique per failure and step) written in
the same transaction as its outbox rows, the failure's new state and its timeline entries.
"""

import hashlib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Func, IntegerField, TextField, Value
from django.db.models.base import ModelState
from django.db.models.functions import Cast, Coalesce, Mod, NullIf

from escalation.choices import EscalationStep, Role, Tier
from escalation.models import (
    Escalation,
    Failure,
    FailureGroup,
    NotificationChannel,
    Repository,
    Team,
    TicketTracker,
    TimelineEntry,
)
from escalation.models.failures import OPEN_Q, TimelineKind
from escalation.services import sla
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.notifications import Message, failure_summary, message_text, notifications_write
from escalation.services.routing import role_team
from escalation.services.statements import array_text, insert_many, insert_values, values_rows
from portal.audit import Actor

S = EscalationStep
# Failures with one error signature first seen within this window of the group's first form one group.
STORM_WINDOW = timedelta(minutes=10)
# Who each step tells: team roles of the failure ("owner", "secondary") or a role's team.
STEP_AUDIENCE: dict[str, tuple[str, ...]] = {
    S.OPENED: ("owner", "secondary"),
    S.TRIAGE_REMINDER: (Role.QA_ANALYST,),
    S.ACKNOWLEDGE_REMINDER: (Role.SECURITY_SPECIALIST,),
    S.AT_RISK: ("owner",),
    S.LEVEL_1: ("secondary", Role.QA_ANALYST),
    S.LEVEL_2: (Role.SCRUM_MASTER,),
    S.TICKET: ("owner",),
}


@dataclass(frozen=True)
class Due:
    step: str
    due_at: datetime


def ladder_steps(failure: Failure, *, team: Team | None, done: set[str]) -> list[Due]:
    """The ladder steps of this failure not yet taken, each with its due time, past or future.

    Failures on unprotected branches and resolved failures have none. While the clock is paused,
    the steps that count SLA time (at risk, breach, standup, a standard tier's ticket) wait.
    """
    if not failure.is_open or not failure.is_protected_branch:
        return []
    snapshot = failure.matrix_snapshot
    steps: list[Due] = []

    def add(step: str, due_at: datetime | None) -> None:
        if step not in done and due_at is not None:
            steps.append(Due(step, due_at))

    running = failure.paused_at is None
    if snapshot["tier"] == Tier.IMMEDIATE:
        add(S.OPENED, failure.first_seen_at)
    if failure.triaged_at is None:
        add(S.TRIAGE_REMINDER, failure.triage_due_at)
    if snapshot.get("acknowledge_budget") and failure.acknowledged_at is None:
        add(S.ACKNOWLEDGE_REMINDER, failure.first_seen_at + timedelta(seconds=snapshot["acknowledge_budget"]))
    if running or snapshot["tier"] != Tier.STANDARD:
        add(S.TICKET, failure.ticket_due_at)
    if running:
        add(S.AT_RISK, failure.at_risk_at)
        add(S.LEVEL_1, failure.sla_due_at)
        add(S.LEVEL_2, level_two_due_at(failure, team=team))
    return steps


def level_two_due_at(failure: Failure, *, team: Team | None, breached_at: datetime | None = None) -> datetime | None:
    """Level 2: the owning team's first standup after the breach (``breached_at``, default the failure's), while
    the failure has no resolution plan; None before the breach, with a plan, or without an owning team."""
    breached_at = breached_at or failure.breached_at
    if breached_at is None or failure.resolution_plan or team is None:
        return None
    return sla.next_standup(team=team, after=breached_at)


def next_step_at(failure: Failure, *, team: Team | None, done: set[str]) -> datetime | None:
    steps = ladder_steps(failure, team=team, done=done)
    return min((s.due_at for s in steps), default=None)


@dataclass
class SweepResult:
    claimed: int = 0
    steps: int = 0
    notifications: int = 0
    paused: int = 0
    resumed: int = 0

    def summary(self) -> str:
        return (
            f"{self.claimed} failures swept, {self.steps} steps taken, {self.notifications} notifications queued, "
            f"{self.paused} clocks paused, {self.resumed} resumed"
        )


def sla_sweep(*, now: datetime, batch_size: int = 2000, workers: int | None = None) -> SweepResult:
    """Pause and resume clocks, then claim every open failure with a ladder step due and take its steps.

    Each batch is one transaction: the claim (skip-locked, so concurrent sweeps take disjoint rows),
    the escalation rows, the outbox rows and the failures' new state commit together. A killed sweep
    takes nothing; the next one takes it all. When the first batch comes back full, ``workers`` threads
    (default PORTAL_SWEEP_WORKERS; PostgreSQL, outside a transaction) sweep the rest at once, each its
    own share on its own connection: while one builds its rows in Python, the database writes another's.
    """
    result = SweepResult()
    pauses = sla.pauses_apply(now=now)
    result.paused, result.resumed = len(pauses.paused), len(pauses.resumed)
    config = routing_config()
    workers = settings.PORTAL_SWEEP_WORKERS if workers is None else workers
    with transaction.atomic():
        batches = [_sweep_batch(config=config, now=now, limit=batch_size)]
    if batches[0].claimed == batch_size:
        if workers > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
            with ThreadPoolExecutor(workers, thread_name_prefix="sla-sweep") as pool:
                batches += pool.map(lambda n: _sweep_thread(config, now, batch_size, (n, workers)), range(workers))
        else:
            batches.append(_sweep_batches(config, now, batch_size))
    total = sum(batches, _Batch())
    result.claimed, result.steps, result.notifications = total.claimed, total.steps, total.notifications
    return result


@dataclass
class _Batch:
    claimed: int = 0
    steps: int = 0
    notifications: int = 0

    def __add__(self, other: "_Batch") -> "_Batch":
        return _Batch(self.claimed + other.claimed, self.steps + other.steps, self.notifications + other.notifications)


def _sweep_thread(config: RoutingConfig, now: datetime, batch_size: int, share: tuple[int, int]) -> _Batch:
    try:
        return _sweep_batches(config, now, batch_size, share)
    finally:
        connection.close()  # the thread's own connection: a thread is not reused


def _sweep_batches(
    config: RoutingConfig, now: datetime, batch_size: int, share: tuple[int, int] | None = None
) -> _Batch:
    """Batches until a claim comes back short: every due step of this share is taken or locked by another sweep."""
    total = _Batch()
    while True:
        with transaction.atomic():
            batch = _sweep_batch(config=config, now=now, limit=batch_size, share=share)
        total += batch
        if batch.claimed < batch_size:
            return total


# What the ladder and the messages read of a claimed failure: loading the other columns (a failure has
# some fifty) would cost more than the rest of the sweep.
SWEPT_FIELDS = [
    *("id", "failure_type", "status", "is_protected_branch", "matrix_snapshot", "branch", "job_name", "signature"),
    *("first_seen_at", "triage_due_at", "triaged_at", "acknowledged_at", "ticket_due_at", "ticket_key"),
    *("at_risk_at", "sla_due_at", "breached_at", "paused_at", "escalation_level", "resolution_plan"),
    *("owner_team_id", "secondary_team_id", "latest_run_id", "group_id", "repository_id"),
]
ESCALATION_COLUMNS = ["failure_id", "step", "due_at", "at", "group_id", "recipients"]
TIMELINE_COLUMNS = ["failure_id", "at", "kind", "actor", "source", "message", "data"]


@dataclass
class _Plan:
    """What one batch will write."""

    escalations: list[tuple] = field(default_factory=list)  # ESCALATION_COLUMNS
    entries: list[tuple] = field(default_factory=list)  # TIMELINE_COLUMNS
    messages: dict[str, Message] = field(default_factory=dict)
    team_names: dict[int, str] = field(default_factory=dict)


def _sweep_batch(*, config: RoutingConfig, now: datetime, limit: int, share: tuple[int, int] | None = None) -> _Batch:
    failures = _claim(now=now, limit=limit, share=share)
    if not failures:
        return _Batch()
    # Groups are read after the claim, not joined in it: a row a concurrent sweep has just put into a new
    # group is re-read by the claim's lock at its new version, but the join would still see the old snapshot.
    groups = FailureGroup.objects.in_bulk({f.group_id for f in failures if f.group_id is not None})
    for failure in failures:
        if failure.group_id is not None:
            failure.group = groups[failure.group_id]
    done: dict[int, set[str]] = defaultdict(set)
    taken = Escalation.objects.filter(failure_id__in_array=[f.pk for f in failures])
    for failure_id, step in taken.values_list("failure_id", "step"):
        done[failure_id].add(step)
    _groups_join(failures)
    targets = _Targets.load()
    actor = Actor.task("sla_sweep")
    plan = _Plan(team_names={pk: team.name for pk, team in targets.teams.items()})
    for failure in failures:
        team = config.teams.get(failure.owner_team_id)
        due = sorted(
            (d for d in ladder_steps(failure, team=team, done=done[failure.pk]) if d.due_at <= now),
            key=lambda d: d.due_at,
        )
        steps = {d.step for d in due}
        for d in due:
            if d.step == S.AT_RISK and S.LEVEL_1 in steps:
                _step(plan, failure, d, [], now, actor, note="breached in the same sweep: level 1 tells instead")
                continue
            if d.step == S.TICKET and failure.ticket_key:
                _step(plan, failure, d, [], now, actor, note=f"already has ticket {failure.ticket_key}")
                continue
            if d.step == S.LEVEL_2:  # no chat: the Scrum Master's standup digest lists it (services/digests)
                _step(plan, failure, d, [], now, actor, told=_standup_digest(config, targets))
                failure.escalation_level = 2
                continue
            recipients = _recipients(config, targets, failure, d.step)
            _step(plan, failure, d, recipients, now, actor)
            if d.step == S.LEVEL_1:
                failure.breached_at, failure.escalation_level = d.due_at, max(failure.escalation_level, 1)
        done[failure.pk] |= steps
        failure.next_step_at = next_step_at(failure, team=team, done=done[failure.pk])
    inserted = notifications_write(_messages_text(list(plan.messages.values())), now=now)
    # The claim makes each (failure, step) new; the unique index is the backstop.
    insert_values(Escalation, ESCALATION_COLUMNS, plan.escalations)
    insert_values(TimelineEntry, TIMELINE_COLUMNS, plan.entries)
    _failures_store(failures)
    return _Batch(claimed=len(failures), steps=len(plan.escalations), notifications=len(inserted))


def _share_of(threads: int) -> Mod:
    """A failure's share among ``threads`` sweep threads: its storm key (the signature, else the run),
    hashed. Storm groups form under a lock per key, so threads with disjoint shares never wait on each other."""
    key = Coalesce(NullIf("signature", Value("")), Cast("latest_run_id", TextField()))
    return Mod(Func(key, function="hashtext", output_field=IntegerField()).bitand(2**31 - 1), threads)


def _claim(*, now: datetime, limit: int, share: tuple[int, int] | None = None) -> list[Failure]:
    """Lock up to ``limit`` open failures with a step due (skip-locked, oldest due first), with SWEPT_FIELDS;
    with ``share`` (n, of), only the n-th of that many disjoint shares (``_share_of``).

    Each failure is built from its loaded columns only, its other fields deferred as with ``only()``: the
    ORM's ``from_db`` runs ``Model.__init__`` over all fifty fields of each row, a third of a sweep's time.
    Repositories (for their names) and matrix snapshots (most failures share a few) are built once each.
    """
    queryset = Failure.objects.select_for_update(skip_locked=True, of=("self",)).filter(OPEN_Q, next_step_at__lte=now)
    if share is not None:
        queryset = queryset.alias(share=_share_of(share[1])).filter(share=share[0])
    queryset = queryset.order_by("next_step_at", "id").values_list(*SWEPT_FIELDS, "repository__name")[:limit]
    db = queryset.db
    repositories: dict[int, Repository] = {}
    snapshots: dict[str, dict] = {}
    failures = []
    for *values, repository_name in values_rows(queryset):
        failure = Failure.__new__(Failure)
        failure.__dict__.update(zip(SWEPT_FIELDS, values, strict=True))
        failure._state = ModelState()
        failure._state.adding, failure._state.db = False, db
        if isinstance(failure.matrix_snapshot, str):  # JSON text (values_rows on PostgreSQL)
            text = failure.matrix_snapshot
            if text not in snapshots:
                snapshots[text] = json.loads(text)
            failure.matrix_snapshot = snapshots[text]
        repository = repositories.get(failure.repository_id)
        if repository is None:
            repository = repositories[failure.repository_id] = Repository.from_db(
                db, ["id", "name"], (failure.repository_id, repository_name)
            )
        failure._state.fields_cache["repository"] = repository
        failures.append(failure)
    return failures


_STORE_SQL = """
    UPDATE escalation_failure AS f
       SET next_step_at = v.next_step_at, breached_at = v.breached_at,
           escalation_level = v.escalation_level, group_id = v.group_id
      FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::smallint[], %s::bigint[])
           AS v(id, next_step_at, breached_at, escalation_level, group_id)
     WHERE f.id = v.id
"""


def _failures_store(failures: list[Failure]) -> None:
    """The swept failures' new ladder state; on PostgreSQL one UPDATE from arrays (bulk_update's CASE per row
    costs seconds of Python for a few thousand rows)."""
    fields = ["next_step_at", "breached_at", "escalation_level", "group_id"]
    if connection.vendor != "postgresql":
        Failure.objects.bulk_update(failures, fields)
        return
    columns = [[f.pk for f in failures]] + [[getattr(f, name) for f in failures] for name in fields]
    with connection.cursor() as cursor:
        cursor.execute(_STORE_SQL, [array_text(column) for column in columns])


def _step(
    plan: _Plan, failure: Failure, due: Due, recipients: list, now: datetime, actor: Actor, note: str = "",
    told: list[dict] | None = None,
):  # fmt: skip
    names = plan.team_names
    told = list(told or [])
    for team, target in recipients:
        key = f"{_ref(failure)}:{due.step}:{'c' if isinstance(target, NotificationChannel) else 't'}{target.pk}"
        message = plan.messages.get(key)
        if message is None:
            message = plan.messages[key] = _message(failure, due.step, target, key, names)
        elif failure.pk not in message.failure_ids:
            _message_add(message, failure, names)
        told.append({"team": team.name, "target": getattr(target, "name", None) or str(target)})
    if not recipients and not note:
        note = "nobody to tell: no channel or ticket tracker configured for the step's teams"
    plan.escalations.append((failure.pk, due.step, due.due_at, now, failure.group_id, told or [{"note": note}]))
    who = ", ".join(sorted({f"{t['team']} ({t['target']})" for t in told})) or note
    text = f"{S(due.step).label}: {who}"
    data = {"step": due.step, "due_at": due.due_at.isoformat(), "recipients": told}
    plan.entries.append((failure.pk, now, TimelineKind.ESCALATED, actor.label, actor.source, text, data))


STANDUP_DIGEST = "standup digest"


def _standup_digest(config: RoutingConfig, targets: "_Targets") -> list[dict]:
    """Level 2's recipients: the Scrum Master's team (the role's default team), told in its standup digest."""
    team = targets.teams.get(config.role_teams.get(Role.SCRUM_MASTER))
    return [{"team": team.name if team else "nobody", "target": STANDUP_DIGEST}]


def _ref(failure: Failure) -> str:
    """Storm control: one message per group (or lone failure), step and target."""
    return f"g{failure.group_id}" if failure.group_id else f"f{failure.pk}"


def _message(failure: Failure, step: str, target, key: str, names: dict[int, str]) -> Message:
    is_ticket = isinstance(target, TicketTracker)
    message = Message(
        subject="",
        body="",
        data={"step": step, "step_label": S(step).label, "failures": []},
        failure_ids=[],
        step=step,
        channel=None if is_ticket else target,
        tracker=target if is_ticket else None,
        dedupe_key=key,
    )
    if failure.group_id:
        message.data["group"] = {"id": failure.group_id, "key": failure.group.key, "size": failure.group.size}
    _message_add(message, failure, names)
    message.data["url"] = message.data["failures"][0]["url"]  # the first failure's page
    return message


def _message_add(message: Message, failure: Failure, names: dict[int, str]) -> None:
    message.failure_ids.append(failure.pk)
    message.data["failures"].append(failure_summary(failure, teams=names))


def _messages_text(messages: list[Message]) -> list[Message]:
    """Each message's subject and body, once all its failures are in."""
    for message in messages:
        message.subject, message.body = message_text(message.data["step_label"], message.data["failures"])
        message.data["title"] = message.subject
    return messages


@dataclass
class _Targets:
    channels: dict[int, list[NotificationChannel]]
    trackers: dict[int, TicketTracker]
    teams: dict[int, Team]

    @classmethod
    def load(cls) -> "_Targets":
        channels: dict[int, list[NotificationChannel]] = defaultdict(list)
        for channel in NotificationChannel.objects.order_by("id"):
            channels[channel.team_id].append(channel)
        teams = Team.objects.in_bulk()
        trackers = {t.team_id: t for t in TicketTracker.objects.all()}
        return cls(channels=channels, trackers=trackers, teams=teams)


def _recipients(config: RoutingConfig, targets: _Targets, failure: Failure, step: str) -> list[tuple[Team, object]]:
    """(team, channel or tracker) pairs the step tells, each team once."""
    team_ids: list[int] = []
    for who in STEP_AUDIENCE[step]:
        if who == "owner":
            team_id = failure.owner_team_id
        elif who == "secondary":
            team_id = failure.secondary_team_id
        else:
            team_id = role_team(config=config, role=who, repository=failure.repository.name, paths=[])
        if team_id is not None and team_id not in team_ids:
            team_ids.append(team_id)
    pairs: list[tuple[Team, object]] = []
    for team_id in team_ids:
        team = targets.teams.get(team_id)
        if team is None:
            continue
        if step == S.TICKET:
            if team_id in targets.trackers:
                pairs.append((team, targets.trackers[team_id]))
        else:
            pairs.extend((team, channel) for channel in targets.channels.get(team_id, []))
    return pairs


def _groups_join(failures: list[Failure]) -> None:
    """Storm control: lock the claimed failures' groups; put each failure not yet in a group into one.

    Failures with one signature first seen within STORM_WINDOW of the group's first member share the
    group (across jobs and repositories); so do the failures one report opened at once. A failure
    alone with its signature gets no group until a second one comes; then both join one. A
    transaction-scoped advisory lock per key makes concurrent sweeps find the same group.
    """
    keyed: dict[str, list[Failure]] = defaultdict(list)
    uploads: dict[str, list[Failure]] = defaultdict(list)
    joined = {failure.group.key for failure in failures if failure.group_id is not None}
    for failure in failures:
        if failure.group_id is None and failure.signature:
            keyed[f"signature:{failure.signature}"].append(failure)
        elif failure.group_id is None:
            uploads[_upload_key(failure)].append(failure)
    for key, members in uploads.items():
        keyed[key].extend(members)
    # One statement takes every lock, in key order: two sweeps never wait on each other crosswise.
    _lock_keys(sorted(set(keyed) | joined))
    if not keyed:
        return
    existing: dict[str, list[FailureGroup]] = defaultdict(list)
    earliest = min(f.first_seen_at for members in keyed.values() for f in members)
    for group in FailureGroup.objects.filter(key__in_array=list(keyed), window_ends_at__gte=earliest).order_by("id"):
        existing[group.key].append(group)
    partners = _earlier_partners(keyed, existing, exclude=[f.pk for f in failures])
    new_groups: list[FailureGroup] = []
    grown: dict[int, FailureGroup] = {}
    pulled_in: list[tuple[int, FailureGroup]] = []
    for key, members in keyed.items():
        for failure in sorted(members, key=lambda f: (f.first_seen_at, f.pk)):
            seen = failure.first_seen_at
            group = next((g for g in existing[key] if g.first_seen_at <= seen <= g.window_ends_at), None)
            if group is None:
                earlier = [p for p in partners.get(key, []) if p[1] <= seen]
                if len(members) < 2 and not earlier:
                    continue  # a lone failure is no storm; a later one with its cause will pull it in
                first = min([seen, *(at for _, at in earlier)])
                group = FailureGroup(key=key, first_seen_at=first, window_ends_at=_window_end(key, first))
                existing[key].append(group)
                new_groups.append(group)
                pulled_in += [(pk, group) for pk, _ in earlier]
                group.size += len(earlier)
            group.size += 1
            failure.group = group
            if group.pk is not None:
                grown[group.pk] = group
    insert_many(new_groups, keys_needed=True)
    for failure in failures:
        if failure.group is not None and failure.group_id is None:
            failure.group = failure.group  # the group has its key now; assigning the object keeps it cached
    FailureGroup.objects.bulk_update(list(grown.values()), ["size"])
    for group in {id(g): g for _, g in pulled_in}.values():
        Failure.objects.filter(pk__in_array=[pk for pk, g in pulled_in if g is group]).update(group=group)


def _earlier_partners(
    keyed: dict[str, list[Failure]], existing: dict[str, list[FailureGroup]], *, exclude: list[int]
) -> dict[str, list[tuple[int, datetime]]]:
    """Failures outside this batch, in no group yet, with the signature of a batch failure that no group
    takes, first seen within the storm window before it: the storm's first members, alone until now.

    Each signature is looked up only between STORM_WINDOW before its first batch member and its last one
    (later failures are never a member's partner): the signature's older and newer failures stay unlocked.
    """
    spans = {
        key[len("signature:") :]: (min(f.first_seen_at for f in members) - STORM_WINDOW,
                                   max(f.first_seen_at for f in members))
        for key, members in keyed.items()
        if key.startswith("signature:") and not existing[key]
    }  # fmt: skip
    if not spans:
        return {}
    partners: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
    for pk, signature, first_seen_at in _partner_rows(spans, exclude=exclude):
        since, until = spans[signature]
        if since <= first_seen_at <= until:
            partners[f"signature:{signature}"].append((pk, first_seen_at))
    return partners


# One index probe (failure_signature_idx) per signature: the lateral subquery with its own lock keeps the
# planner from hashing the whole failure table instead, which it prefers on estimates alone.
_PARTNERS_SQL = """
    SELECT p.id, p.signature, p.first_seen_at
      FROM unnest(%s::varchar[], %s::timestamptz[], %s::timestamptz[]) AS s(signature, since, until),
           LATERAL (SELECT f.id, f.signature, f.first_seen_at
                      FROM escalation_failure AS f
                     WHERE f.signature = s.signature AND f.first_seen_at BETWEEN s.since AND s.until
                       AND f.group_id IS NULL AND NOT f.id = ANY(%s)
                       FOR UPDATE OF f SKIP LOCKED) AS p
"""


def _partner_rows(spans: dict[str, tuple[datetime, datetime]], *, exclude: list[int]) -> list[tuple]:
    """(id, signature, first_seen_at) of the ungrouped failures first seen within their signature's span.

    Skip-locked: a partner another sweep has claimed is that sweep's to group, and waiting for it while
    holding this signature's lock would deadlock with it. On PostgreSQL one statement with the spans as
    arrays; elsewhere the signatures' rows since the earliest span, which the caller narrows.
    """
    if connection.vendor == "postgresql":
        signatures = list(spans)
        with connection.cursor() as cursor:
            since, until = [spans[s][0] for s in signatures], [spans[s][1] for s in signatures]
            cursor.execute(_PARTNERS_SQL, [array_text(column) for column in (signatures, since, until, exclude)])
            return cursor.fetchall()
    return list(
        Failure.objects.select_for_update(skip_locked=True)
        .filter(signature__in_array=list(spans), group__isnull=True)
        .filter(first_seen_at__gte=min(since for since, _ in spans.values()))
        .exclude(pk__in_array=exclude)
        .values_list("pk", "signature", "first_seen_at")
    )


def _upload_key(failure: Failure) -> str:
    return f"upload:{failure.latest_run_id}:{failure.first_seen_at.isoformat()}"


def _window_end(key: str, first_seen_at: datetime) -> datetime:
    return first_seen_at + (STORM_WINDOW if key.startswith("signature:") else timedelta(0))


def _lock_keys(keys: list[str]) -> None:
    if not keys or connection.vendor != "postgresql":
        return  # SQLite runs one writer at a time
    ids = sorted(int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big", signed=True) for k in keys)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", [array_text(ids)])
