"""The SLA clock: when a failure is due, on its matrix row's calendar."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings

from escalation.choices import Calendar
from escalation.models import Team


def sla_budget(snapshot: dict, *, is_complex: bool = False) -> timedelta:
    seconds = snapshot["sla_budget"]
    if is_complex and snapshot.get("complex_sla_budget"):
        seconds = snapshot["complex_sla_budget"]
    return timedelta(seconds=seconds)


def sla_due_at(*, snapshot: dict, opened_at: datetime, team: Team | None, is_complex: bool = False) -> datetime:
    budget = sla_budget(snapshot, is_complex=is_complex)
    if snapshot["calendar"] == Calendar.TEAM_HOURS and team is not None:
        return working_time_add(team=team, start=opened_at, budget=budget)
    return opened_at + budget


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
    holidays = {date.fromisoformat(d) for d in team.holidays}
    remaining = budget
    day = local.date()
    for _ in range(3660):
        if day.weekday() in team.working_days and day not in holidays:
            window_start = _at(day, team.workday_start, zone)
            window_end = _at(day, team.workday_end, zone)
            begin = max(window_start, start_utc)
            if begin < window_end:
                available = window_end - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
        day += timedelta(days=1)
    raise ValueError(f"team {team} has no working time in the next ten years")


def _at(day: date, moment: time, zone: ZoneInfo) -> datetime:
    # Arithmetic on aware datetimes in one zone is wall-clock; go through UTC to count real time.
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)
