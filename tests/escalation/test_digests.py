"""Digests and reports: each figure against a crafted history computed by hand, the schedule in the teams'
time zones, level 2 delivered in the Scrum Master's standup digest, and the send_digest command."""

from datetime import UTC, datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import IntegrityError
from django.utils import timezone

from escalation.choices import DigestKind, FailureStatus, FalloutStatus, Resolution
from escalation.choices import EscalationStep as S
from escalation.models import (
    ClassificationRule,
    Digest,
    Escalation,
    Failure,
    Fallout,
    FalloutRule,
    Notification,
    NotificationChannel,
    Team,
    TimelineEntry,
)
from escalation.models.failures import TimelineKind
from escalation.services.digests import figures as fig
from escalation.services.digests.compose import (
    _insert_once,
    digest_compose,
    digest_figures,
    digest_send,
    digests_send_due,
)
from escalation.services.digests.schedule import digests_due, digests_planned
from escalation.services.escalation import sla_sweep
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

UTC_ZONE = ZoneInfo("UTC")
H, M, D = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)
T0 = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)  # Tuesday of the week 9-16 November
WEEK = (datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))
NOVEMBER = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
OCTOBER = (datetime(2026, 10, 1, tzinfo=UTC), NOVEMBER[0])


def team(name: str) -> Team:
    return Team.objects.get(name=name)


def failure(api, job: str, seen: datetime, *, owner: str, type: str = "unit_test", branch: str = "main", **fields):
    """A failure reported by CI at ``seen``, then given its owner and the history in ``fields`` directly."""
    stamp = seen.isoformat()
    reported = report_failure(api, type=type, job=job, branch=branch, started_at=stamp, finished_at=stamp)
    fields.setdefault("at_risk_at", None)
    Failure.objects.filter(pk=reported.pk).update(owner_team=team(owner), **fields)
    return Failure.objects.get(pk=reported.pk)


def resolved(at: datetime, how: Resolution = Resolution.FIXED) -> dict:
    return {"status": FailureStatus.RESOLVED, "resolution": how, "resolved_at": at}


@pytest.fixture
def week(api) -> dict[str, Failure]:
    """The week of 9-16 November (UTC), every figure worked out by hand in the tests below.

    SLA ends in the week: F1 hit, F2 miss (resolved late), F5 hit (false positive in time): unit_test 2 of 3,
    Backend 2 of 3. F3 miss (open, due in the week), F4 hit, F10 hit (resolved while paused, the pause before
    its due time), F12 miss: ci_runner 2 of 4, DevOps 2 of 4. Left out: F6 superseded, F7 due the week
    before, F8 unprotected branch, F9 open with its clock paused, F11 no SLA.
    """
    f = {}
    f["F1"] = failure(
        api, "unit-a", T0, owner="Backend", sla_due_at=T0 + 4 * H, acknowledged_at=T0 + 30 * M, **resolved(T0 + 2 * H)
    )
    f["F2"] = failure(
        api,
        "unit-a",
        T0 + D,
        owner="Backend",
        sla_due_at=T0 + D + 4 * H,
        acknowledged_at=T0 + D + H,
        **resolved(T0 + D + 6 * H),
    )
    f["F3"] = failure(
        api,
        "runner-x",
        T0,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=T0 + 30 * M,
        breached_at=T0 + 30 * M,
        escalation_level=1,
    )
    for later in (T0 + 2 * H, T0 + 3 * H):  # the same job fails twice more while F3 is open
        stamp = later.isoformat()
        report_failure(api, type="ci_runner", job="runner-x", started_at=stamp, finished_at=stamp)
    f["F4"] = failure(
        api,
        "runner-y",
        T0 + 2 * D,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=T0 + 2 * D + 30 * M,
        acknowledged_at=T0 + 2 * D + 5 * M,
        **resolved(T0 + 2 * D + 20 * M, Resolution.RECOVERED),
    )
    f["F5"] = failure(
        api, "unit-b", T0, owner="Backend", sla_due_at=T0 + 4 * H, **resolved(T0 + H, Resolution.FALSE_POSITIVE)
    )
    f["F6"] = failure(
        api, "unit-c", T0, owner="Backend", sla_due_at=T0 + 4 * H, **resolved(T0 + 10 * M, Resolution.SUPERSEDED)
    )
    seen7 = datetime(2026, 11, 8, 10, 0, tzinfo=UTC)
    f["F7"] = failure(
        api,
        "integration",
        seen7,
        owner="Backend",
        type="integration_test",
        sla_due_at=seen7 + 8 * H,
        acknowledged_at=seen7 + 26 * H,
        **resolved(seen7 + 3 * D),
    )
    f["F8"] = failure(
        api,
        "unit-d",
        T0,
        owner="Backend",
        branch="feature/cart",
        sla_due_at=None,
        acknowledged_at=T0 + M,
        **resolved(T0 + 2 * M),
    )
    f["F9"] = failure(
        api,
        "runner-z",
        T0 + 3 * D,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=T0 + 3 * D + 30 * M,
        paused_at=T0 + 3 * D + 10 * M,
    )
    seen10 = T0 + 3 * D
    f["F10"] = failure(
        api,
        "runner-w",
        seen10,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=seen10 + 30 * M,
        paused_at=seen10 + 20 * M,
        **resolved(seen10 + H),
    )
    f["F11"] = failure(api, "build", T0, owner="Backend", type="build_error", sla_due_at=None)
    seen12 = T0 + 3 * D + 2 * H
    f["F12"] = failure(
        api,
        "runner-v",
        seen12,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=seen12 + 30 * M,
        acknowledged_at=seen12 + 10 * M,
        **resolved(seen12 + 2 * H),
    )
    return f


def rows(rates: dict) -> dict[str, tuple[int, int, float | None]]:
    return {row["key"]: (row["hit"], row["total"], row["rate"]) for row in rates["rows"]}


# --- the figures, by hand ---


def test_sla_hit_rate_counts_the_failures_whose_sla_ended_in_the_period(week):
    by_type = fig.sla_hit_rate_by_type(start=WEEK[0], end=WEEK[1])
    assert rows(by_type) == {"ci_runner": (2, 4, 50.0), "unit_test": (2, 3, 66.7)}
    assert (by_type["hit"], by_type["total"], by_type["rate"]) == (4, 7, 57.1)
    by_team = fig.sla_hit_rate_by_team(start=WEEK[0], end=WEEK[1])
    assert rows(by_team) == {"Backend": (2, 3, 66.7), "DevOps": (2, 4, 50.0)}
    counted = {o["id"] for o in fig.sla_outcomes(start=WEEK[0], end=WEEK[1])}
    assert counted == {week[n].pk for n in ("F1", "F2", "F3", "F4", "F5", "F10", "F12")}


def test_a_failure_resolved_after_its_due_time_counts_in_the_period_of_its_due_time(week):
    # F7 was due on 8 November and resolved on the 11th: a miss of the week before, not of this one.
    before = fig.sla_outcomes(start=WEEK[0] - 7 * D, end=WEEK[0])
    assert [(o["id"], o["hit"]) for o in before] == [(week["F7"].pk, False)]


def test_median_and_p90_time_to_acknowledge_and_to_resolve(week):
    acknowledge = fig.time_to_acknowledge(start=WEEK[0], end=WEEK[1])
    # Acknowledged in the week: F4 5m, F12 10m, F1 30m, F2 1h, F7 26h (F8 is on an unprotected branch).
    # Median: the 3rd of 5 = 30m. p90: rank 0.9 * 4 = 3.6, 1h + 0.6 * (26h - 1h) = 16h.
    assert acknowledge["count"] == 5
    assert acknowledge["median_seconds"] == 30 * 60 and acknowledge["median"] == "30m"
    assert acknowledge["p90_seconds"] == 16 * 3600 and acknowledge["p90"] == "16h 0m"
    resolve = fig.time_to_resolve(start=WEEK[0], end=WEEK[1])
    # Resolved in the week (F6 superseded and F8 unprotected left out): F4 20m, F5 1h, F10 1h, F1 2h, F12 2h,
    # F2 6h, F7 72h. Median: the 4th of 7 = 2h. p90: rank 5.4, 6h + 0.4 * (72h - 6h) = 32.4h = 1d 8h.
    assert resolve["count"] == 7
    assert resolve["median_seconds"] == 2 * 3600 and resolve["median"] == "2h 0m"
    assert resolve["p90_seconds"] == 116_640 and resolve["p90"] == "1d 8h"


def test_repeat_failures_are_fingerprints_seen_more_than_once_in_the_period(week):
    repeats = fig.repeat_failures(start=WEEK[0], end=WEEK[1])
    # runner-x: one failure seen three times; unit-a: two failures (F1 resolved, F2 opened again), once each.
    got = [(i["job"], i["occurrences"], i["failures"]) for i in repeats["items"]]
    assert got == [("runner-x", 3, 1), ("unit-a", 2, 2)]
    assert repeats["count"] == 2
    assert fig.repeat_failures(start=WEEK[0], end=WEEK[1], top=1)["items"][0]["job"] == "runner-x"
    assert fig.repeat_failures(start=WEEK[0], end=T0 + 2 * H + M)["items"][0]["occurrences"] == 2


def test_percentile_interpolates_between_the_closest_ranks():
    assert fig.percentile([], 50) is None
    assert fig.percentile([7.0], 90) == 7.0
    assert fig.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert fig.percentile([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0], 90) == 91.0


def test_overrides_are_reported_as_not_tracked_yet():
    for figure in (fig.overrides_by_team, fig.teams_over_override_budget):
        answer = figure(start=WEEK[0], end=WEEK[1])
        assert answer["tracked"] is False and answer["rows"] == []
        assert "not tracked yet" in answer["note"]


def open_fallout(rule_code: str, *, at: datetime, owner: str | None, title: str, status=FalloutStatus.OPEN):
    rule = FalloutRule.objects.get(code=rule_code)
    return Fallout.objects.create(
        rule=rule,
        category=rule.category,
        scope_key=title,
        title=title,
        status=status,
        owner_team=team(owner) if owner else None,
        opened_at=at,
        updated_at=at,
    )


@pytest.fixture
def rule_codes(db) -> list[str]:
    return list(FalloutRule.objects.order_by("code").values_list("code", flat=True)[:3])


def test_the_weekly_report_holds_every_figure_of_its_week(week, rule_codes):
    open_fallout(rule_codes[0], at=T0, owner="DevOps", title="Runner pool keeps losing runners")
    open_fallout(rule_codes[1], at=T0, owner=None, title="Dismissed", status=FalloutStatus.DISMISSED)
    [plan] = digests_planned(DigestKind.WEEKLY, now=datetime(2026, 11, 16, 9, 30, tzinfo=UTC), team_name="Product")
    assert (plan.period_start, plan.period_end) == WEEK

    composed = digest_compose(plan, now=datetime(2026, 11, 16, 9, 30, tzinfo=UTC))

    figures = composed.figures
    assert rows(figures["sla_hit_rate_by_type"]) == {"ci_runner": (2, 4, 50.0), "unit_test": (2, 3, 66.7)}
    assert rows(figures["sla_hit_rate_by_team"]) == {"Backend": (2, 3, 66.7), "DevOps": (2, 4, 50.0)}
    assert figures["time_to_acknowledge"]["median"] == "30m" and figures["time_to_resolve"]["p90"] == "1d 8h"
    assert figures["overrides_by_team"]["tracked"] is False
    assert [i["title"] for i in figures["open_fallouts"]["items"]] == ["Runner pool keeps losing runners"]
    assert figures["repeat_failures"]["count"] == 2
    assert composed.subject == "Weekly SLA report, week 46 of 2026"
    text = composed.text
    assert "CI runner: 50.0 % (2 of 4)" in text and "Unit test: 66.7 % (2 of 3)" in text
    assert "Backend: 66.7 % (2 of 3)" in text and "All: 57.1 % (4 of 7)" in text
    assert "Time to acknowledge: median 30m, p90 16h 0m (5 acknowledged)" in text
    assert "Overrides by team\n  Not tracked yet (overrides arrive with a later issue" in text
    assert "runner-x (ci_runner): 3 occurrences in 1 failure(s)" in text
    assert "<table" in composed.html and 'style="' in composed.html and "<link" not in composed.html


def test_the_daily_digest_lists_breached_new_at_risk_fallouts_and_the_hit_rate_since_the_last_standup(api, rule_codes):
    now = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)  # Wednesday: Backend's standup (09:30 UTC)
    last = now - D  # Tuesday's standup
    d1 = failure(
        api, "d1", last + 30 * M, owner="Backend", sla_due_at=last + 4 * H, breached_at=last + 4 * H, escalation_level=1
    )
    failure(
        api,
        "d2",
        last + 30 * M,
        owner="Backend",
        sla_due_at=last + 4 * H,
        breached_at=last + 4 * H,
        resolution_plan="Revert the cart change",
    )
    d3 = failure(api, "d3", now - 3 * H, owner="Backend", sla_due_at=now + 30 * M, at_risk_at=now - 30 * M)
    d4 = failure(api, "d4", now - H, owner="Backend", sla_due_at=now + 3 * H, at_risk_at=now + 2 * H)
    failure(api, "d6", last + H, owner="Backend", sla_due_at=last + 5 * H, **resolved(last + 2 * H))
    failure(api, "old", last - H, owner="Backend", sla_due_at=now + 10 * H)  # before the period, fine
    failure(api, "d5", now - H, owner="DevOps", type="ci_runner", sla_due_at=now + H)
    open_fallout(rule_codes[0], at=last + 10 * H, owner="Backend", title="Flaky cart tests")
    open_fallout(rule_codes[1], at=last + 10 * H, owner="DevOps", title="Runner hardening")
    [plan] = [p for p in digests_planned(DigestKind.DAILY, now=now) if p.audience == f"team:{team('Backend').pk}"]
    assert (plan.period_start, plan.period_end) == (last, now)

    figures = digest_figures(plan, now=now)

    assert [i["id"] for i in figures["breached_without_plan"]["items"]] == [d1.pk]
    assert figures["breached_without_plan"]["items"][0]["level_2"] is True  # Wednesday's standup has come
    assert [i["id"] for i in figures["at_risk"]["items"]] == [d3.pk]
    assert figures["new_failures"]["count"] == 5 and figures["new_failures"]["items"][0]["id"] == d4.pk
    assert figures["new_failures"]["by_type"] == [{"key": "unit_test", "count": 5}]
    assert [i["title"] for i in figures["new_fallouts"]["items"]] == ["Flaky cart tests"]
    assert rows(figures["sla_hit_rate_by_type"]) == {"unit_test": (1, 3, 33.3)}  # d6 hit; d1 and d2 missed
    assert "level_2" not in figures  # a team's digest marks its level-2 failures; the list is the Scrum Master's
    text = digest_compose(plan, now=now).text
    assert f"- [level 2] #{d1.pk} unit_test" in text
    assert "Breached without a plan (1)" in text and "New fallouts (1)" in text


def test_the_monthly_review_compares_months_and_derives_its_recommendations(week, api):
    rules = list(ClassificationRule.objects.order_by("id")[:2])
    seen = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)
    failure(api, "oct-unit", seen, owner="Backend", sla_due_at=seen + 4 * H, **resolved(seen + H))
    failure(
        api, "oct-runner", seen, owner="DevOps", type="ci_runner", sla_due_at=seen + 30 * M, **resolved(seen + 2 * H)
    )
    failure(
        api,
        "oct-integration",
        seen,
        owner="Backend",
        type="integration_test",
        sla_due_at=seen + 8 * H,
        **resolved(seen + D),
    )
    corrections = [(week["F1"], rules[0]), (week["F2"], rules[0]), (week["F3"], rules[1])]
    for corrected, rule in corrections:
        Failure.objects.filter(pk=corrected.pk).update(classification_rule=rule)
        TimelineEntry.objects.create(
            failure=corrected, at=T0 + 5 * H, kind=TimelineKind.TYPE_CORRECTED, source="admin", message="Type corrected"
        )
    TimelineEntry.objects.create(failure=week["F4"], at=T0, kind=TimelineKind.RECLASSIFIED, source="admin", message="")
    [plan] = digests_planned(DigestKind.MONTHLY, now=datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    assert (plan.period_start, plan.period_end, plan.audience) == (*NOVEMBER, "scrum_master")

    figures = digest_compose(plan, now=datetime(2026, 12, 1, 9, 30, tzinfo=UTC)).figures

    # November adds F7 (due on the 8th, missed) to the week; October: unit hit, runner and integration missed.
    assert rows(figures["current"]["sla_hit_rate_by_type"]) == {
        "ci_runner": (2, 4, 50.0),
        "integration_test": (0, 1, 0.0),
        "unit_test": (2, 3, 66.7),
    }
    assert rows(figures["previous"]["sla_hit_rate_by_type"]) == {
        "ci_runner": (0, 1, 0.0),
        "integration_test": (0, 1, 0.0),
        "unit_test": (1, 1, 100.0),
    }
    change = {r["key"]: (r["previous"], r["current"], r["change"], r["rose"]) for r in figures["breach_rate_change"]}
    assert change == {
        "ci_runner": (100.0, 50.0, -50.0, False),
        "integration_test": (100.0, 100.0, 0.0, False),
        "unit_test": (0.0, 33.3, 33.3, True),
    }
    corrected = [(i["rule"], i["count"]) for i in figures["rules_most_corrected"]["items"]]
    assert corrected == [(rules[0].name, 2), (rules[1].name, 1)]
    assert figures["teams_over_override_budget"]["tracked"] is False
    assert figures["recommendations"][0].startswith("Breach rate of Unit test rose from 0.0 % to 33.3 %")
    assert f"Rule {rules[0].name!r} was corrected 2 time(s)" in figures["recommendations"][1]
    assert figures["recommendations"][-1].startswith("Override budget: not tracked yet")
    assert len(figures["recommendations"]) == 4
    assert figures["previous_period"]["text"] == "October 2026"


# --- when, and for whom ---


@pytest.fixture
def berlin(api) -> Team:
    platform = Team.objects.create(name="Platform", timezone="Europe/Berlin")
    failure(
        api,
        "platform-job",
        datetime(2026, 11, 16, 8, 0, tzinfo=UTC),
        owner="Platform",
        sla_due_at=datetime(2026, 11, 16, 12, 0, tzinfo=UTC),
    )
    return platform


def platform_due(now: datetime) -> list:
    return [p for p in digests_due(now=now) if p.team.name == "Platform" and p.kind == DigestKind.DAILY]


def test_a_berlin_team_gets_its_daily_digest_at_its_standup_in_its_time_zone_once(berlin):
    # Wednesday 18 November: 09:30 in Berlin is 08:30 UTC; the period runs from Tuesday's standup.
    assert [p.period_start for p in platform_due(datetime(2026, 11, 18, 8, 29, tzinfo=UTC))] == [
        datetime(2026, 11, 16, 8, 30, tzinfo=UTC)  # the latest standup before is Tuesday's: not sent yet either
    ]
    early = datetime(2026, 11, 18, 8, 29, tzinfo=UTC)
    digest_send(platform_due(early)[0], now=early)
    assert platform_due(datetime(2026, 11, 18, 8, 29, tzinfo=UTC)) == []  # Wednesday's is not due before 09:30
    [plan] = platform_due(datetime(2026, 11, 18, 8, 30, tzinfo=UTC))
    assert (plan.period_start, plan.period_end) == (
        datetime(2026, 11, 17, 8, 30, tzinfo=UTC),
        datetime(2026, 11, 18, 8, 30, tzinfo=UTC),
    )
    sent = digest_send(plan, now=datetime(2026, 11, 18, 8, 30, tzinfo=UTC))
    assert sent.created and "(Europe/Berlin)" in sent.digest.text
    assert platform_due(datetime(2026, 11, 18, 8, 35, tzinfo=UTC)) == []
    assert platform_due(datetime(2026, 11, 18, 23, 0, tzinfo=UTC)) == []


def test_no_daily_digest_on_a_day_off_and_mondays_cover_the_weekend(berlin):
    [friday] = platform_due(datetime(2026, 11, 20, 8, 30, tzinfo=UTC))
    digest_send(friday, now=datetime(2026, 11, 20, 8, 30, tzinfo=UTC))
    assert platform_due(datetime(2026, 11, 21, 8, 30, tzinfo=UTC)) == []  # Saturday
    assert platform_due(datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) == []  # Sunday
    [monday] = platform_due(datetime(2026, 11, 23, 8, 30, tzinfo=UTC))
    assert monday.period_start == friday.period_end


def test_the_weekly_report_goes_on_monday_to_the_stakeholder_teams_each_once(db):
    assert digests_planned(DigestKind.WEEKLY, now=datetime(2026, 11, 16, 9, 29, tzinfo=UTC))[0].period_end == (
        datetime(2026, 11, 9, tzinfo=UTC)  # before Monday's standup the latest report is last week's
    )
    plans = digests_planned(DigestKind.WEEKLY, now=datetime(2026, 11, 16, 9, 30, tzinfo=UTC))
    assert [(p.team.name, p.role) for p in plans] == [
        ("Product", "product_owner"),
        ("Architecture", "technical_architect"),
        ("Scrum", "scrum_master"),
    ]
    assert {(p.period_start, p.period_end) for p in plans} == {WEEK}


def test_the_monthly_review_goes_on_the_first_for_the_month_before(db):
    [plan] = digests_planned(DigestKind.MONTHLY, now=datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    assert (plan.period_start, plan.period_end, plan.team.name) == (*NOVEMBER, "Scrum")
    [earlier] = digests_planned(DigestKind.MONTHLY, now=datetime(2026, 12, 1, 9, 29, tzinfo=UTC))
    assert (earlier.period_start, earlier.period_end) == OCTOBER


def test_a_team_with_nothing_to_report_gets_its_digest_stored_and_no_message(db):
    quiet = Team.objects.get(name="Frontend")
    NotificationChannel.objects.create(team=quiet, kind="slack", name="#frontend", url="http://127.0.0.1:9/")
    [plan] = digests_planned(DigestKind.DAILY, now=datetime(2026, 11, 18, 9, 30, tzinfo=UTC), team_name="Frontend")
    sent = digest_send(plan, now=datetime(2026, 11, 18, 9, 30, tzinfo=UTC))
    assert sent.created and sent.notifications == 0
    assert Digest.objects.filter(team=quiet).count() == 1 and not Notification.objects.exists()


# --- level 2 goes in the Scrum Master's digest ---


def test_level_two_is_recorded_by_the_sweep_and_delivered_in_the_scrum_masters_digest(api):
    scrum = NotificationChannel.objects.create(team=team("Scrum"), kind="slack", name="#scrum", url="http://x.test/")
    opened = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)  # Wednesday
    stamp = opened.isoformat()
    runner = report_failure(api, type="ci_runner", job="deploy", started_at=stamp, finished_at=stamp)
    sla_sweep(now=opened + 31 * M)
    standup = datetime(2026, 11, 19, 9, 30, tzinfo=UTC)  # DevOps's next standup (UTC): level 2 is due
    sla_sweep(now=standup + M)

    step = Escalation.objects.get(failure=runner, step=S.LEVEL_2)
    assert step.recipients == [{"team": "Scrum", "target": "standup digest"}]
    assert not Notification.objects.filter(step=S.LEVEL_2).exists()
    runner.refresh_from_db()
    assert runner.escalation_level == 2
    assert "Scrum (standup digest)" in runner.timeline.get(kind=TimelineKind.ESCALATED, data__step=S.LEVEL_2).message

    sent = {(d.digest.kind, d.digest.audience): d for d in digests_send_due(now=standup + M)}
    master = sent[(DigestKind.DAILY, "scrum_master")].digest
    assert [i["id"] for i in master.figures["level_2"]["items"]] == [runner.pk]
    assert f"- [level 2] #{runner.pk} ci_runner" in master.text
    assert master.team.name == "Scrum" and master.kind == DigestKind.DAILY
    [message] = Notification.objects.filter(digest=master)
    assert message.channel == scrum and message.step == "" and message.subject == master.subject
    devops = sent[(DigestKind.DAILY, f"team:{team('DevOps').pk}")].digest
    assert devops.figures["breached_without_plan"]["items"][0]["level_2"] is True
    assert "level_2" not in devops.figures


def test_the_scrum_masters_digest_lists_every_open_level_two_failure_across_teams(api):
    now = datetime(2026, 11, 19, 9, 45, tzinfo=UTC)  # Thursday, after the 09:30 standup (UTC teams)
    breached = now - 20 * H
    backend = failure(
        api, "b", breached - H, owner="Backend", sla_due_at=breached, breached_at=breached, escalation_level=2
    )
    devops = failure(
        api,
        "d",
        breached - H,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=breached,
        breached_at=breached,
        escalation_level=1,
    )  # level 2 due at 09:30, not swept yet: listed all the same
    failure(
        api,
        "p",
        breached - H,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=breached,
        breached_at=breached,
        escalation_level=2,
        resolution_plan="Replace the runner",
    )
    failure(
        api,
        "late",
        now - H,
        owner="DevOps",
        type="ci_runner",
        sla_due_at=now - 5 * M,
        breached_at=now - 5 * M,
        escalation_level=1,
    )  # breached after today's standup: level 2 waits for tomorrow's
    listed = fig.level_two_failures(now=now, zone=UTC_ZONE)
    assert sorted(i["id"] for i in listed["items"]) == sorted([backend.pk, devops.pk])

    [plan] = [p for p in digests_planned(DigestKind.DAILY, now=now, team_name="Scrum") if p.role]
    text = digest_compose(plan, now=now).text
    level_two, _, rest = text.partition("Breached without a plan, not yet at level 2 (1)")
    assert f"#{backend.pk} " in level_two and f"#{devops.pk} " in level_two
    assert f"#{backend.pk} " not in rest.split("At risk")[0] and "[level 2]" not in rest.split("At risk")[0]


# --- idempotency and the command ---


def test_a_second_send_for_the_same_period_stores_and_sends_nothing(week):
    NotificationChannel.objects.create(team=team("Product"), kind="slack", name="#product", url="http://x.test/")
    now = datetime(2026, 11, 16, 9, 30, tzinfo=UTC)
    [plan] = digests_planned(DigestKind.WEEKLY, now=now, team_name="Product")
    first, second = digest_send(plan, now=now), digest_send(plan, now=now + H)
    assert first.created and first.notifications == 1
    assert not second.created and second.notifications == 0 and second.digest.pk == first.digest.pk
    assert Digest.objects.count() == 1 and Notification.objects.count() == 1


def test_a_digest_that_breaks_another_constraint_is_an_error_not_a_digest_already_sent(db):
    at = datetime(2026, 11, 16, 9, 30, tzinfo=UTC)
    broken = Digest(kind=DigestKind.WEEKLY, audience="team:1", period_start=at, period_end=at + H, subject="s",
                    text=None, html="", created_at=at)  # fmt: skip
    with pytest.raises(IntegrityError, match="text"):
        _insert_once(broken)
    assert not Digest.objects.exists()


def command(*args: str) -> str:
    out = StringIO()
    call_command("send_digest", *args, stdout=out)
    return out.getvalue()


def test_the_command_sends_each_kind_once_and_says_so_the_second_time(week):
    for name in ("Product", "Architecture", "Scrum", "Backend"):
        NotificationChannel.objects.create(team=team(name), kind="slack", name=f"#{name}", url="http://x.test/")
    out = command("weekly", "--at", "2026-11-16T09:30:00+00:00")
    assert out.count("1 message(s) queued") == 3
    assert Digest.objects.filter(kind=DigestKind.WEEKLY).count() == 3
    again = command("weekly", "--at", "2026-11-16T10:00:00")
    assert again.count("already sent") == 3 and Notification.objects.count() == 3

    assert all(n.next_attempt_at <= timezone.now() for n in Notification.objects.all())  # due now, not at --at

    out = command("monthly", "--at", "2026-12-01T09:30:00Z")  # a moment to come: composed as then, sent now
    assert "Monthly process review for scrum_master (Scrum)" in out and "1 message(s) queued" in out
    assert Notification.objects.get(digest__kind=DigestKind.MONTHLY).next_attempt_at <= timezone.now()
    assert "already sent" in command("monthly", "--at", "2026-12-01T09:45:00Z")

    out = command("daily", "--team", "Backend", "--at", "2026-11-17T09:30:00Z")
    assert out.count("stored") == 1 and Digest.objects.get(kind=DigestKind.DAILY).team.name == "Backend"
    assert "already sent" in command("daily", "--team", "Backend", "--at", "2026-11-17T09:35:00Z")


def test_a_dry_run_prints_the_text_and_stores_nothing(week):
    out = command("weekly", "--team", "Architecture", "--at", "2026-11-16T09:30:00Z", "--dry-run")
    assert "dry run: not stored, not sent" in out and "SLA hit rate by failure type" in out
    assert "Unit test: 66.7 % (2 of 3)" in out
    assert not Digest.objects.exists() and not Notification.objects.exists()


def test_the_command_refuses_an_unknown_team_and_a_bad_time(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no team is named 'Nobody'"):
        command("daily", "--team", "Nobody")
    with pytest.raises(CommandError, match="not an ISO 8601 time"):
        command("daily", "--at", "yesterday")
    assert not Digest.objects.exists()


def test_the_scheduled_task_sends_what_is_due(week, monkeypatch):
    from django.utils import timezone

    from escalation import tasks

    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 11, 16, 9, 30, tzinfo=UTC))
    summary = tasks.digests_send_due()
    # Monday 16 November 09:30 UTC: Backend's and DevOps's daily digests and the Scrum Master's, three weekly
    # reports, and October's monthly review (its moment, 1 November 09:30, is the latest).
    assert summary.startswith("7 digests stored")
    assert tasks.digests_send_due().startswith("0 digests stored")


def test_the_admin_shows_a_digest_read_only_with_its_figures_and_html(week, client, scrum_master):
    [plan] = digests_planned(DigestKind.WEEKLY, now=datetime(2026, 11, 16, 9, 30, tzinfo=UTC), team_name="Product")
    digest = digest_send(plan, now=datetime(2026, 11, 16, 9, 30, tzinfo=UTC)).digest
    client.force_login(scrum_master)

    listed = client.get("/admin/escalation/digest/")
    page = client.get(f"/admin/escalation/digest/{digest.pk}/change/")

    assert listed.status_code == 200 and digest.subject in listed.content.decode()
    body = page.content.decode()
    assert page.status_code == 200
    assert "HTML as sent" in body and 'sandbox=""' in body and "srcdoc=" in body
    assert "&quot;sla_hit_rate_by_type&quot;" in body  # the figures, as stored
    assert 'name="_save"' not in body  # read-only
