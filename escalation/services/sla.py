"""The SLA clock: when a failure is due, on its matrix row's calendar."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from escalation.choices import INFRASTRUCTURE_TYPES, OPEN_STATUSES, Calendar, Tier
from escalation.models import ClockPause, Failure, Team, TimelineEntry
from escalation.models.failures import OPEN_Q, TimelineKind
from escalation.services.timeline import timeline_entry
from portal.audit import Actor

AT_RISK_SHARE = 0.75
# Standard tier: a ticket when still unresolved this long after opening, or at the breach if sooner.
STANDARD_TICKET_AFTER = timedelta(hours=4)


def sla_budget(snapshot: dict, *, is_complex: bool = False) -> timedelta:
    seconds = snapshot["sla_budget"]
    if is_complex and snapshot.get("complex_sla_budget"):
        seconds = snapshot["complex_sla_budget"]
    return timedelta(seconds=seconds)


def sla_due_at(*, snapshot: dict, opened_at: datetime, team: Team | None, is_complex: bool = False) -> datetime:
    return clock_add(snapshot=snapshot, team=team, start=opened_at, budget=sla_budget(snapshot, is_complex=is_complex))


def clock_add(*, snapshot: dict, team: Team | None, start: datetime, budget: timedelta) -> datetime:
    """``start`` plus ``budget`` on the matrix row's calendar: 24x7, or the owning team's working hours."""
    if snapshot["calendar"] == Calendar.TEAM_HOURS and team is not None:
        return working_time_add(team=team, start=start, budget=budget)
    return start + budget


def failure_deadlines(failure: Failure, *, team: Team | None, paused: timedelta = timedelta(0)) -> None:
    """Set the SLA due time, the at-risk moment and the tier's ticket time of a failure, in memory.

    Counted from the opening on the snapshot's calendar, moved by ``paused`` (the clock's paused time so far).
    Failures on unprotected branches have none: they never escalate.
    """
    if not failure.is_protected_branch:
        failure.sla_due_at = failure.at_risk_at = failure.ticket_due_at = None
        return
    snapshot, opened_at = failure.matrix_snapshot, failure.first_seen_at
    budget = sla_budget(snapshot, is_complex=failure.is_complex)
    failure.sla_due_at = clock_add(snapshot=snapshot, team=team, start=opened_at, budget=budget) + paused
    failure.at_risk_at = (
        clock_add(snapshot=snapshot, team=team, start=opened_at, budget=budget * AT_RISK_SHARE) + paused
    )
    if snapshot["tier"] == Tier.STANDARD:
        failure.ticket_due_at = min(opened_at + STANDARD_TICKET_AFTER + paused, failure.sla_due_at)
    else:  # immediate and investigation open their ticket at once
        failure.ticket_due_at = opened_at


def next_standup(*, team: Team, after: datetime) -> datetime:
    """The team's first daily standup after ``after``, on a working day that is not a holiday."""
    zone, works = ZoneInfo(team.timezone), working_day_test(team)
    day = after.astimezone(zone).date()
    for _ in range(3660):
        if works(day):
            moment = wall_clock(day, team.standup_at, zone)
            if moment > after:
                return moment
        day += timedelta(days=1)
    raise ValueError(f"team {team} has no standup in the next ten years")


def latest_standup(*, team: Team, now: datetime) -> datetime | None:
    """The team's last daily standup at or before ``now``, on a working day that is not a holiday; None when
    it had none in the past year."""
    zone, works = ZoneInfo(team.timezone), working_day_test(team)
    day = now.astimezone(zone).date()
    for _ in range(366):
        if works(day) and (moment := wall_clock(day, team.standup_at, zone)) <= now:
            return moment
        day -= timedelta(days=1)
    return None


def working_day_test(team: Team) -> Callable[[date], bool]:
    """Whether a day is one of the team's working days and not one of its holidays (parsed once per calendar:
    a sweep asks for thousands of failures of a few teams)."""
    return _working_day_test(tuple(team.working_days), tuple(team.holidays))


@functools.lru_cache(maxsize=256)
def _working_day_test(working_days: tuple[int, ...], holidays: tuple[str, ...]) -> Callable[[date], bool]:
    days_off = frozenset(date.fromisoformat(d) for d in holidays)
    working = frozenset(working_days)
    return lambda day: day.weekday() in working and day not in days_off


def triage_due_at(*, opened_at: datetime) -> datetime:
    return opened_at + timedelta(minutes=settings.PORTAL_TRIAGE_MINUTES)


def working_time_add(*, team: Team, start: datetime, budget: timedelta) -> datetime:
    """The moment ``budget`` of the team's working time has passed since ``start``.

    1. Walk the team's days in its own time zone, from the day of ``start``.
    2. On a working day that is not a holiday, spend what is left of the budget in its working window.
    3. Return the moment the budget reaches zero, in UTC.
    """
    zone = ZoneInfo(team.timezone)
    local = start.astimezone(zone)
    start_utc = start.astimezone(UTC)
    remaining, works = budget, working_day_test(team)
    day = local.date()
    for _ in range(3660):
        if works(day):
            window_start = wall_clock(day, team.workday_start, zone)
            window_end = wall_clock(day, team.workday_end, zone)
            begin = max(window_start, start_utc)
            if begin < window_end:
                available = window_end - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
        day += timedelta(days=1)
    raise ValueError(f"team {team} has no working time in the next ten years")


def wall_clock(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """The day's wall-clock ``moment`` in ``zone``, in UTC.

    Arithmetic on aware datetimes in one zone is wall-clock; going through UTC counts real time."""
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)


def breached_q(*, now: datetime) -> Q:
    """Open failures past their SLA: marked by the sweep, or due and not paused (before the sweep gets there)."""
    return OPEN_Q & (Q(breached_at__isnull=False) | Q(sla_due_at__lt=now, paused_at__isnull=True))


def at_risk_q(*, now: datetime) -> Q:
    """Open failures that have spent 75 % of their SLA budget but are not breached; a paused clock is not at risk."""
    return OPEN_Q & Q(at_risk_at__lte=now, paused_at__isnull=True) & ~breached_q(now=now)


def paused_total(failure: Failure) -> timedelta:
    """The clock's paused time so far, from the ended pauses (an open pause moves the due time when it ends)."""
    return sum(
        (p.ended_at - p.started_at for p in failure.pauses.filter(ended_at__isnull=False)),
        timedelta(0),
    )


@dataclass
class PauseChanges:
    paused: list[int]
    resumed: list[int]


def pauses_apply(*, now: datetime) -> PauseChanges:
    """Pause the clocks of failures whose latest run has an open infrastructure failure; resume the others.

    A few set-based statements whatever the number of failures. The pause starts when its cause opened
    (or the failure, if later) and ends when the cause resolved, so the due time moves by exactly the
    interval in which the cause was open, however late the sweep notices.
    """
    actor = Actor.task("sla_sweep")
    with transaction.atomic():
        resumed = _pauses_end(now=now, actor=actor)
        paused = _pauses_start(now=now, actor=actor)
    return PauseChanges(paused=paused, resumed=resumed)


def _pauses_start(*, now: datetime, actor: Actor) -> list[int]:
    causes = {}
    for cause in (
        Failure.objects.filter(OPEN_Q, failure_type__in=INFRASTRUCTURE_TYPES, is_protected_branch=True)
        .order_by("first_seen_at", "id")
        .only("id", "latest_run_id", "first_seen_at", "failure_type")
    ):
        causes.setdefault(cause.latest_run_id, cause)
    if not causes:
        return []
    failures = list(
        Failure.objects.select_for_update(skip_locked=True)
        .filter(OPEN_Q, latest_run_id__in=list(causes), paused_at__isnull=True, is_protected_branch=True)
        .filter(breached_at__isnull=True)
        .exclude(failure_type__in=INFRASTRUCTURE_TYPES)
        .only("id", "latest_run_id", "first_seen_at")
    )
    pauses, entries = [], []
    for failure in failures:
        cause = causes[failure.latest_run_id]
        failure.paused_at = min(max(cause.first_seen_at, failure.first_seen_at), now)
        reason = f"{cause.failure_type} failure #{cause.pk} is open on the run of the latest occurrence"
        pauses.append(ClockPause(failure=failure, cause=cause, started_at=failure.paused_at, reason=reason))
        entries.append(timeline_entry(failure, now, TimelineKind.PAUSED, actor, f"SLA clock paused: {reason}",
                              {"cause": cause.pk, "since": failure.paused_at.isoformat()}))  # fmt: skip
    ClockPause.objects.bulk_create(pauses)
    Failure.objects.bulk_update(failures, ["paused_at"])
    TimelineEntry.objects.bulk_create(entries)
    return [f.pk for f in failures]


def _pauses_end(*, now: datetime, actor: Actor) -> list[int]:
    """End the pauses whose cause is resolved, whose failure moved on to another run, or whose failure resolved."""
    pauses = list(
        ClockPause.objects.select_for_update(skip_locked=True, of=("self", "failure"))
        .filter(ended_at__isnull=True)
        .filter(
            ~Q(cause__status__in=OPEN_STATUSES)
            | Q(cause__isnull=True)
            | ~Q(failure__status__in=OPEN_STATUSES)
            | ~Q(failure__latest_run_id=F("cause__latest_run_id"))
        )
        .select_related("failure", "cause")
    )
    failures, entries = [], []
    for pause in pauses:
        failure, cause = pause.failure, pause.cause
        ended = cause.resolved_at if cause is not None and cause.resolved_at else now
        pause.ended_at = min(max(ended, pause.started_at), now)
        interval = pause.ended_at - pause.started_at
        if not failure.is_open:
            continue
        moved = ["sla_due_at", "at_risk_at"] + (
            ["ticket_due_at"] if failure.matrix_snapshot["tier"] == Tier.STANDARD else []
        )
        for name in moved:
            if getattr(failure, name) is not None:
                setattr(failure, name, getattr(failure, name) + interval)
        failure.paused_at = None
        failure.next_step_at = now  # the sweep works out the next step from the moved due times
        failures.append(failure)
        message = f"SLA clock resumed after {_duration(interval)}; due times moved by the same"
        data = {"paused_seconds": int(interval.total_seconds()), "sla_due_at": _iso(failure.sla_due_at)}
        entries.append(timeline_entry(failure, now, TimelineKind.RESUMED, actor, message, data))
    ClockPause.objects.bulk_update(pauses, ["ended_at"])
    Failure.objects.bulk_update(failures, ["sla_due_at", "at_risk_at", "ticket_due_at", "paused_at", "next_step_at"])
    TimelineEntry.objects.bulk_create(entries)
    return [f.pk for f in failures]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _duration(interval: timedelta) -> str:
    minutes = int(interval.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"
