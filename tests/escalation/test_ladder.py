"""The escalation ladder, step by step, as DESIGN.md's "Tiers and the escalation ladder" describes it."""

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from escalation.choices import EscalationStep as S
from escalation.choices import FailureStatus, Resolution
from escalation.models import Escalation, Failure, Notification, NotificationChannel, Team, TicketTracker
from escalation.services.escalation import sla_sweep
from escalation.services.failures import failure_mark_complex, failure_plan_set, failures_acknowledge, failures_resolve
from portal.audit import Actor
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

OPENED = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)  # a Wednesday
ACTOR = Actor.task("test")


@pytest.fixture
def channels(db) -> dict[str, NotificationChannel]:
    """A Slack channel for every default team, and a ticket tracker for each."""
    made = {}
    for team in Team.objects.all():
        made[team.name] = NotificationChannel.objects.create(
            team=team, kind="slack", name=f"#{team.name.lower()}", url="http://127.0.0.1:9/hook"
        )
        TicketTracker.objects.create(
            team=team, kind="github", base_url="http://127.0.0.1:9", project="acme/tickets", token="t"
        )
    return made


def open_failure(api, failure_type: str, **changes) -> Failure:
    stamp = changes.pop("at", OPENED).isoformat()
    return report_failure(api, type=failure_type, started_at=stamp, finished_at=stamp, **changes)


def steps(failure: Failure) -> list[str]:
    return list(Escalation.objects.filter(failure=failure).order_by("at", "id").values_list("step", flat=True))


def told(failure: Failure, step: str) -> set[str]:
    """The channels and trackers told of this failure at this step."""
    rows = Notification.objects.filter(failures=failure, step=step).select_related("channel", "tracker__team")
    return {row.channel.name if row.channel else f"ticket:{row.tracker.team.name}" for row in rows}


def test_a_sweep_inside_a_transaction_stays_on_its_connection(api, channels):
    """Threads would not see the caller's uncommitted rows: inside a transaction every batch is the caller's."""
    failures = [open_failure(api, "ci_runner", job=f"deploy-{n}") for n in range(3)]
    result = sla_sweep(now=OPENED + timedelta(seconds=30), batch_size=1, workers=4)
    assert (result.claimed, result.steps) == (3, 6)
    assert [steps(failure) for failure in failures] == [[S.OPENED, S.TICKET]] * 3


def test_an_immediate_failure_climbs_every_rung_once(api, channels):
    failure = open_failure(api, "ci_runner")  # 30 min, immediate; DevOps owns, CI/CD is secondary
    assert failure.sla_due_at == OPENED + timedelta(minutes=30)
    assert failure.next_step_at == OPENED

    sla_sweep(now=OPENED + timedelta(seconds=30))
    assert steps(failure) == [S.OPENED, S.TICKET]
    assert told(failure, S.OPENED) == {"#devops", "#ci/cd"}
    assert told(failure, S.TICKET) == {"ticket:DevOps"}

    sla_sweep(now=OPENED + timedelta(minutes=15))
    assert told(failure, S.TRIAGE_REMINDER) == {"#qa"}
    sla_sweep(now=OPENED + timedelta(minutes=23))
    assert told(failure, S.AT_RISK) == {"#devops"}
    sla_sweep(now=OPENED + timedelta(minutes=31))
    assert told(failure, S.LEVEL_1) == {"#ci/cd", "#qa"}
    failure.refresh_from_db()
    assert failure.breached_at == OPENED + timedelta(minutes=30)
    assert failure.escalation_level == 1
    # Level 2 waits for the owning team's next standup (09:30 UTC on Thursday).
    assert failure.next_step_at == datetime(2026, 11, 19, 9, 30, tzinfo=UTC)
    sla_sweep(now=datetime(2026, 11, 19, 9, 29, tzinfo=UTC))
    assert S.LEVEL_2 not in steps(failure)
    sla_sweep(now=datetime(2026, 11, 19, 9, 31, tzinfo=UTC))
    # Level 2 is delivered in the Scrum Master's standup digest (tests/escalation/test_digests.py): no chat message.
    assert told(failure, S.LEVEL_2) == set()
    level_two = Escalation.objects.get(failure=failure, step=S.LEVEL_2)
    assert level_two.recipients == [{"team": "Scrum", "target": "standup digest"}]
    failure.refresh_from_db()
    assert failure.escalation_level == 2 and failure.next_step_at is None

    before = (Escalation.objects.count(), Notification.objects.count())
    sla_sweep(now=datetime(2026, 11, 30, tzinfo=UTC))
    assert (Escalation.objects.count(), Notification.objects.count()) == before
    assert steps(failure) == [S.OPENED, S.TICKET, S.TRIAGE_REMINDER, S.AT_RISK, S.LEVEL_1, S.LEVEL_2]


def test_a_standard_failure_gets_its_ticket_at_four_hours_or_at_breach(api, channels):
    medium = open_failure(api, "vulnerability_medium", job="trivy")  # 7 days: the ticket comes at 4 h
    build = open_failure(api, "build_error", job="compile")  # 2 h: the ticket comes at the breach
    sla_sweep(now=OPENED + timedelta(minutes=1))
    assert steps(medium) == [] and steps(build) == []  # standard: no chat at open
    sla_sweep(now=OPENED + timedelta(hours=2, minutes=1))
    assert S.TICKET in steps(build) and S.LEVEL_1 in steps(build)
    assert S.TICKET not in steps(medium)
    sla_sweep(now=OPENED + timedelta(hours=4, minutes=1))
    assert S.TICKET in steps(medium) and S.LEVEL_1 not in steps(medium)


def test_an_investigation_failure_opens_a_ticket_at_once_and_chats_only_at_breach(api, channels):
    failure = open_failure(api, "integration_test")  # 8 h, investigation
    sla_sweep(now=OPENED + timedelta(minutes=1))
    assert steps(failure) == [S.TICKET]
    sla_sweep(now=OPENED + timedelta(hours=6, minutes=1))
    assert told(failure, S.AT_RISK) == {"#backend"}
    sla_sweep(now=OPENED + timedelta(hours=8, minutes=1))
    assert told(failure, S.LEVEL_1) == {"#qa"}  # QA is both secondary owner and the QA channel: told once


def test_failures_on_unprotected_branches_never_escalate(api, channels):
    failure = open_failure(api, "ci_runner", branch="feature/cart")
    assert failure.sla_due_at is None and failure.next_step_at is None
    sla_sweep(now=OPENED + timedelta(days=3))
    assert steps(failure) == [] and Notification.objects.count() == 0


def test_critical_findings_remind_security_to_acknowledge_within_an_hour(api, channels):
    acknowledged = open_failure(api, "vulnerability_critical", job="trivy-a")
    forgotten = open_failure(api, "vulnerability_critical", job="trivy-b")
    failures_acknowledge(failure_ids=[acknowledged.pk], actor=ACTOR, now=OPENED + timedelta(minutes=20))
    sla_sweep(now=OPENED + timedelta(minutes=61))
    assert told(forgotten, S.ACKNOWLEDGE_REMINDER) == {"#security"}
    assert S.ACKNOWLEDGE_REMINDER not in steps(acknowledged)


def test_a_resolution_plan_keeps_a_breached_failure_from_the_standup(api, channels):
    planned = open_failure(api, "ci_runner", job="runner-a")
    unplanned = open_failure(api, "ci_runner", job="runner-b")
    sla_sweep(now=OPENED + timedelta(minutes=31))
    failure_plan_set(
        failure_id=planned.pk, plan="Rebuild the runner image", owner=None, due=date(2026, 11, 20), actor=ACTOR,
        now=OPENED + timedelta(hours=1),
    )  # fmt: skip
    sla_sweep(now=datetime(2026, 11, 19, 9, 31, tzinfo=UTC))
    assert S.LEVEL_2 in steps(unplanned)
    assert S.LEVEL_2 not in steps(planned)
    planned.refresh_from_db()
    assert planned.resolution_plan == "Rebuild the runner image"
    assert planned.timeline.filter(kind="plan_set").exists()


def test_a_plan_due_in_the_past_is_refused_and_nothing_changes(api, qa_analyst):
    from portal.errors import BadInput

    failure = open_failure(api, "ci_runner")
    with pytest.raises(BadInput, match="due date 2026-11-17 is in the past"):
        failure_plan_set(
            failure_id=failure.pk, plan="Rebuild the image", owner=None, due=date(2026, 11, 17),
            actor=Actor.of_user(qa_analyst, "admin"), now=OPENED,
        )  # fmt: skip
    failure.refresh_from_db()
    assert failure.resolution_plan == "" and not failure.timeline.filter(kind="plan_set").exists()


def test_marking_a_database_test_complex_moves_it_to_the_eight_hour_budget(api, channels, qa_analyst):
    failure = open_failure(api, "database_test")
    assert failure.sla_due_at == OPENED + timedelta(hours=4)
    failure_mark_complex(failure_id=failure.pk, actor=Actor.of_user(qa_analyst, "admin"), now=OPENED)
    failure.refresh_from_db()
    assert failure.is_complex and failure.sla_due_at == OPENED + timedelta(hours=8)
    assert failure.at_risk_at == OPENED + timedelta(hours=6)
    sla_sweep(now=OPENED + timedelta(hours=5))
    assert S.LEVEL_1 not in steps(failure)
    sla_sweep(now=OPENED + timedelta(hours=8, minutes=1))
    assert S.LEVEL_1 in steps(failure)


def test_only_a_failure_with_a_complex_budget_can_be_marked_complex(api, qa_analyst):
    from portal.errors import InvalidState

    failure = open_failure(api, "unit_test")
    with pytest.raises(InvalidState, match="no complex SLA budget"):
        failure_mark_complex(failure_id=failure.pk, actor=Actor.of_user(qa_analyst, "admin"), now=OPENED)


def test_an_infrastructure_failure_on_the_run_pauses_the_clock_by_exactly_its_open_time(api, channels):
    failure = open_failure(api, "unit_test", run_id="777", job="unit")  # 4 h budget
    infra = open_failure(api, "ci_runner", run_id="777", job="deploy", at=OPENED + timedelta(hours=1))
    sla_sweep(now=OPENED + timedelta(hours=1, minutes=1))
    failure.refresh_from_db()
    assert failure.paused_at == OPENED + timedelta(hours=1)
    pause = failure.pauses.get()
    assert "ci_runner failure" in pause.reason and pause.cause_id == infra.pk

    sla_sweep(now=OPENED + timedelta(hours=4, minutes=1))  # past the old due time: paused, no breach
    assert S.LEVEL_1 not in steps(failure)

    failures_resolve(
        failure_ids=[infra.pk], resolution=Resolution.FIXED, actor=ACTOR, now=OPENED + timedelta(hours=3, minutes=30)
    )
    sla_sweep(now=OPENED + timedelta(hours=4, minutes=2))
    failure.refresh_from_db()
    pause.refresh_from_db()
    assert pause.ended_at == OPENED + timedelta(hours=3, minutes=30)
    assert failure.paused_at is None
    assert failure.sla_due_at == OPENED + timedelta(hours=6, minutes=30)  # moved by the 2.5 h paused
    kinds = list(failure.timeline.values_list("kind", flat=True))
    assert "paused" in kinds and "resumed" in kinds
    sla_sweep(now=OPENED + timedelta(hours=6, minutes=31))
    assert S.LEVEL_1 in steps(failure)


def test_one_cause_across_jobs_sends_one_message_per_target_and_step(api, channels):
    log = "psycopg.OperationalError: connection to server at 10.0.0.5 port 5432 failed: timeout expired"
    storm = [
        open_failure(api, "database_connectivity", job=f"shard-{n}", log_excerpt=log, at=OPENED + timedelta(minutes=n))
        for n in range(6)
    ]
    late = open_failure(api, "database_connectivity", job="shard-late", log_excerpt=log, at=OPENED + timedelta(hours=1))
    sla_sweep(now=OPENED + timedelta(minutes=7))
    group = {f.group_id for f in Failure.objects.filter(pk__in=[f.pk for f in storm])}
    assert len(group) == 1 and None not in group
    opened = Notification.objects.filter(step=S.OPENED)
    assert sorted(opened.values_list("channel__name", flat=True)) == ["#database", "#devops"]
    for message in opened:
        assert message.failures.count() == 6
        assert len(message.data["failures"]) == 6
        assert "and 5 more with the same cause" in message.subject
    assert Escalation.objects.filter(step=S.OPENED).count() == 6  # each failure's step is recorded
    sla_sweep(now=OPENED + timedelta(hours=1, minutes=1))
    late.refresh_from_db()
    assert late.group_id not in group  # outside the 10-minute window: its own group and messages
    assert told(late, S.OPENED) == {"#database", "#devops"}


def test_a_lone_failure_has_no_group_until_a_second_with_its_cause_pulls_it_in(api, channels):
    log = "redis.exceptions.ConnectionError: Error 111 connecting to cache:6379. Connection refused."
    first = open_failure(api, "test_environment", job="api-tests", log_excerpt=log)
    sla_sweep(now=OPENED + timedelta(minutes=16))  # its triage reminder: alone, told on its own
    first.refresh_from_db()
    assert first.group_id is None and told(first, S.TRIAGE_REMINDER) == {"#qa"}
    second = open_failure(api, "test_environment", job="web-tests", log_excerpt=log, at=OPENED + timedelta(minutes=5))
    third = open_failure(api, "test_environment", job="late", log_excerpt=log, at=OPENED + timedelta(minutes=30))
    sla_sweep(now=OPENED + timedelta(minutes=21))
    first.refresh_from_db(), second.refresh_from_db()
    assert first.group_id == second.group_id is not None
    assert first.group.size == 2 and first.group.first_seen_at == OPENED
    assert Notification.objects.filter(step=S.TRIAGE_REMINDER, failures=first).count() == 1  # not told again
    sla_sweep(now=OPENED + timedelta(minutes=46))
    third.refresh_from_db()
    assert third.group_id is None  # 30 minutes later: not the same storm


def test_a_resolved_failure_takes_no_further_step(api, channels):
    failure = open_failure(api, "ci_runner")
    failures_resolve(failure_ids=[failure.pk], resolution=Resolution.FIXED, actor=ACTOR, now=OPENED)
    sla_sweep(now=OPENED + timedelta(hours=2))
    assert steps(failure) == []
    assert Failure.objects.get(pk=failure.pk).status == FailureStatus.RESOLVED


def test_the_failure_api_shows_the_ladder(api, channels, ingest_token):
    failure = open_failure(api, "ci_runner")
    sla_sweep(now=OPENED + timedelta(minutes=31))
    body = api.get(f"/api/v1/failures/{failure.pk}/").json()
    assert body["breached"] is True and body["escalation_level"] == 1
    assert body["breached_at"] == "2026-11-18T10:30:00Z"
    taken = {e["step"]: e for e in body["escalations"]}
    assert set(taken) == {"opened", "ticket", "triage_reminder", "level_1", "at_risk"}
    assert {r["team"] for r in taken["level_1"]["recipients"]} == {"CI/CD", "QA"}
    listed = api.get("/api/v1/failures/", {"breached": "true"}).json()["results"]
    assert [f["id"] for f in listed] == [failure.pk]
    assert listed[0]["at_risk"] is False  # breached, no longer merely at risk


def test_the_admin_marks_a_database_test_complex_and_refuses_other_types(api, database_specialist, client):
    database = open_failure(api, "database_test", job="migrations")
    unit = open_failure(api, "unit_test", job="unit")
    client.force_login(database_specialist)
    response = client.post(
        "/admin/escalation/failure/",
        {"action": "mark_complex", "_selected_action": [database.pk, unit.pk], "note": "three-way migration"},
        follow=True,
    )
    shown = [(m.level_tag, m.message) for m in response.context["messages"]]
    assert ("error", "a unit_test failure has no complex SLA budget in its matrix row") in shown
    assert ("info", "1 failure(s) marked complex.") in shown
    database.refresh_from_db()
    assert database.is_complex and database.sla_due_at == OPENED + timedelta(hours=8)
    assert "three-way migration" in database.timeline.get(kind="marked_complex").message


def test_the_scheduled_sweep_delivers_what_it_queued_at_once(api, recorder, monkeypatch):
    from django.utils import timezone

    from escalation import tasks

    team = Team.objects.get(name="DevOps")
    NotificationChannel.objects.create(team=team, kind="slack", name="#devops", url=recorder.url("/devops"))
    recorder.script("/devops", 200)
    failure = open_failure(api, "ci_runner")
    monkeypatch.setattr(timezone, "now", lambda: OPENED + timedelta(seconds=20))

    summary = tasks.sla_sweep()

    assert "1 delivered" in summary
    (request,) = recorder.to("/devops")
    body = request.json()
    assert failure.job_name in json.dumps(body["blocks"])
    assert request.headers["notification-id"] == str(Notification.objects.get(channel__name="#devops").uid)
