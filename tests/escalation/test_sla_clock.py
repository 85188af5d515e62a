"""Due times on the matrix row's calendar."""

from datetime import UTC, datetime, time, timedelta

import pytest

from escalation.choices import Calendar
from escalation.services.sla import sla_due_at
from tests.factories import TeamFactory

pytestmark = pytest.mark.django_db


def snapshot(hours: float, calendar: str = Calendar.ALWAYS, complex_hours: float | None = None) -> dict:
    return {
        "sla_budget": hours * 3600,
        "complex_sla_budget": complex_hours * 3600 if complex_hours else None,
        "calendar": calendar,
    }


def test_a_24x7_budget_runs_through_nights_and_weekends():
    friday_evening = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
    due = sla_due_at(snapshot=snapshot(4), opened_at=friday_evening, team=None)
    assert due == datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def test_a_complex_database_test_gets_the_longer_budget():
    opened = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    due = sla_due_at(snapshot=snapshot(4, complex_hours=8), opened_at=opened, team=None, is_complex=True)
    assert due == opened + timedelta(hours=8)


def test_working_hours_skip_the_weekend_and_a_monday_holiday():
    team = TeamFactory(timezone="Europe/Berlin", workday_start=time(9), workday_end=time(17), holidays=["2026-11-23"])
    friday_afternoon = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)  # 15:00 in Berlin: 2 working hours left
    due = sla_due_at(snapshot=snapshot(4, Calendar.TEAM_HOURS), opened_at=friday_afternoon, team=team)
    assert due == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # Tuesday 11:00 Berlin


def test_working_hours_count_real_time_across_a_daylight_saving_change():
    team = TeamFactory(
        timezone="America/New_York",
        workday_start=time(0),
        workday_end=time(23, 59),
        working_days=[0, 1, 2, 3, 4, 5, 6],
    )
    # 2026-03-08 02:00 local clocks jump to 03:00; the window that day is one hour shorter in real time.
    opened = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
    due = sla_due_at(snapshot=snapshot(4, Calendar.TEAM_HOURS), opened_at=opened, team=team)
    assert due == opened + timedelta(hours=4)
