"""Fallouts from detection to decision: one open per rule and scope, tickets and messages through the outbox,
the admin (tuning rules, confirm, dismiss with a reason, close), the schedule, the task and the command."""

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from escalation import tasks
from escalation.choices import ChannelKind, FalloutStatus, NotificationStatus, Role, TrackerKind
from escalation.models import (
    Failure,
    Fallout,
    FalloutRule,
    Notification,
    NotificationChannel,
    OwnershipRule,
    RoleDefaultTeam,
    Team,
    TicketTracker,
)
from escalation.services.fallout import (
    FalloutNotDecidable,
    FalloutReasonRequired,
    detect_patterns,
    fallout_close,
    fallout_confirm,
    fallout_dismiss,
)
from escalation.services.notifications import notifications_deliver
from portal.audit import Actor
from portal.errors import RoleRequired
from portal.models import AuditEntry
from tests.escalation.fallout_support import breached, failure_ids, reported, rule_set
from tests.recorder import Answer

pytestmark = pytest.mark.django_db

FALLOUTS = reverse("admin:escalation_fallout_changelist")
TOKEN = "ghp-fallout-test-token-0123456789"  # noqa: S105 - a test value


def team_of(role: Role) -> Team:
    return RoleDefaultTeam.objects.get(role=role).team


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def runner_failures(api, count: int, *, label: str = "gh-large-x64") -> list[int]:
    return reported(api, count, type="ci_runner", runner=label)


def sla_failures(api, count: int, *, at=None) -> list[int]:
    return breached(api, count, at=at or timezone.now() - timedelta(hours=1), type="unit_test")


@pytest.fixture
def devops_targets(recorder):
    """DevOps' GitHub tracker (the local recorder) and Slack channel, and the Database team's channel."""
    devops, database = team_of(Role.DEVOPS_SPECIALIST), team_of(Role.DATABASE_SPECIALIST)
    tracker = TicketTracker.objects.create(
        team=devops, kind=TrackerKind.GITHUB, base_url=recorder.base_url, project="acme/ops", token=TOKEN
    )
    channel = NotificationChannel.objects.create(
        team=devops, kind=ChannelKind.SLACK, name="#devops", url=recorder.url("/devops")
    )
    db_channel = NotificationChannel.objects.create(
        team=database, kind=ChannelKind.SLACK, name="#db", url=recorder.url("/db")
    )
    return tracker, channel, db_channel


@pytest.fixture
def scrum_targets(recorder):
    team = team_of(Role.SCRUM_MASTER)
    tracker = TicketTracker.objects.create(
        team=team, kind=TrackerKind.GITHUB, base_url=recorder.base_url, project="acme/process", token=TOKEN
    )
    channel = NotificationChannel.objects.create(team=team, kind=ChannelKind.SLACK, name="#sm", url=recorder.url("/sm"))
    return tracker, channel


# --- infrastructure: open at once, ticket and messages ---


def test_an_infrastructure_fallout_opens_at_once_with_a_ticket_and_a_message_to_each_owner_team(api, devops_targets):
    tracker, devops_channel, db_channel = devops_targets
    ids = reported(api, 3, type="database_connectivity")
    result = detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="connection_pool")
    assert (result.opened, fallout.status, fallout.owner_team) == (1, FalloutStatus.OPEN, tracker.team)
    entries = Notification.objects.filter(fallout=fallout)
    assert {(e.tracker_id, e.channel_id) for e in entries} == {
        (tracker.pk, None), (None, devops_channel.pk), (None, db_channel.pk)
    }  # fmt: skip
    ticket = entries.get(tracker=tracker)
    assert set(ticket.failures.values_list("pk", flat=True)) == set(ids)
    assert ticket.dedupe_key == f"fallout:{fallout.pk}:ticket"
    assert "3 database_connectivity failures in 24 h" in ticket.body
    assert AuditEntry.objects.filter(object_id=str(fallout.pk), content_type__model="fallout").count() == 1


def test_the_ticket_is_delivered_once_with_the_pattern_scope_figures_and_every_failure(api, recorder, devops_targets):
    tracker, _, _ = devops_targets
    recorder.script("/repos/acme/ops/issues", Answer(201, {"number": 42, "html_url": "https://github.com/acme/ops/42"}))
    ids = runner_failures(api, 3)
    now = timezone.now()
    detect_patterns(now=now)
    notifications_deliver(now=now)

    fallout = Fallout.objects.get(rule__code="runner_hardening")
    assert (fallout.ticket_key, fallout.ticket_url) == ("#42", "https://github.com/acme/ops/42")
    [issue] = [r for r in recorder.requests if r.path == "/repos/acme/ops/issues"]
    body = issue.json()["body"]
    assert issue.json()["title"] == "[Fallout] Runner hardening: gh-large-x64"
    assert "Pattern: 3 ci_runner failures in 24 h on one runner label" in body
    assert "Scope: per runner label: gh-large-x64" in body
    assert "- count: 3" in body and "- threshold: 3" in body
    for pk in ids:
        assert f"/admin/escalation/failure/{pk}/change/" in body
    assert not Failure.objects.filter(pk__in=ids).exclude(ticket_key="").exists()  # the failures keep their own

    Notification.objects.filter(fallout=fallout).update(status=NotificationStatus.PENDING, attempts=0)
    second = notifications_deliver(now=now + timedelta(minutes=5))
    assert second.skipped == 1
    assert len([r for r in recorder.requests if r.path == "/repos/acme/ops/issues"]) == 1
    assert Fallout.objects.get(pk=fallout.pk).ticket_key == "#42"


def test_a_failed_ticket_call_releases_the_fallout_for_the_retry(api, recorder, devops_targets):
    recorder.script("/repos/acme/ops/issues", 502, Answer(201, {"number": 7, "html_url": "https://github.com/o/7"}))
    runner_failures(api, 3)
    now = timezone.now()
    detect_patterns(now=now)
    notifications_deliver(now=now)
    fallout = Fallout.objects.get(rule__code="runner_hardening")
    assert fallout.ticket_key == ""
    notifications_deliver(now=now + timedelta(minutes=10))
    assert Fallout.objects.get(pk=fallout.pk).ticket_key == "#7"


def test_a_scope_with_a_repository_routes_the_ticket_by_that_repositorys_ownership_rules(api, recorder):
    platform = Team.objects.create(name="Platform")
    OwnershipRule.objects.create(position=1, repository_pattern="acme/api", role=Role.DEVOPS_SPECIALIST, team=platform)
    tracker = TicketTracker.objects.create(
        team=platform, kind=TrackerKind.GITHUB, base_url=recorder.base_url, project="acme/platform", token=TOKEN
    )
    rule_set("connection_pool", scope="repository")
    reported(api, 3, type="database_connectivity", repository="acme/api")
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="connection_pool")
    assert (fallout.scope_key, fallout.owner_team) == ("acme/api", platform)
    assert Notification.objects.filter(fallout=fallout, tracker=tracker).count() == 1


# --- one open per rule and scope ---


def test_repeated_runs_keep_one_open_fallout_and_add_new_triggers_to_it(api, devops_targets):
    first = runner_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="runner_hardening")
    opened_at = fallout.updated_at
    assert detect_patterns(now=timezone.now()).updated == 0  # nothing new: nothing changes
    second = runner_failures(api, 2)
    result = detect_patterns(now=timezone.now())
    assert (result.opened, result.updated) == (0, 1)
    fallout = Fallout.objects.get(rule__code="runner_hardening")
    assert failure_ids(fallout) == set(first + second)
    assert fallout.updated_at > opened_at and fallout.detail["count"] == 5
    assert Notification.objects.filter(fallout=fallout, tracker__isnull=False).count() == 1


def test_another_scope_key_opens_its_own_fallout(api):
    runner_failures(api, 3, label="gh-large-x64")
    runner_failures(api, 3, label="gl-shared")
    detect_patterns(now=timezone.now())
    keys = set(Fallout.objects.filter(rule__code="runner_hardening").values_list("scope_key", flat=True))
    assert keys == {"gh-large-x64", "gl-shared"}


def test_a_closed_fallout_is_not_reopened_from_its_old_triggers_but_new_ones_open_another(api):
    runner_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="runner_hardening")
    fallout_close(fallout_id=fallout.pk, actor=Actor.task("test"), now=timezone.now(), reason="runners rebuilt")
    detect_patterns(now=timezone.now())
    assert Fallout.objects.filter(rule__code="runner_hardening").count() == 1
    new = runner_failures(api, 3)
    detect_patterns(now=timezone.now())
    reopened = Fallout.objects.get(rule__code="runner_hardening", status=FalloutStatus.OPEN)
    assert failure_ids(reopened) == set(new)


def test_a_disabled_rule_finds_nothing(api):
    rule_set("runner_hardening", is_enabled=False)
    runner_failures(api, 3)
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.exists()


# --- process and technical debt: proposed, decided in the admin ---


def test_a_process_fallout_is_proposed_to_the_scrum_master_with_a_link_and_no_ticket(api, scrum_targets):
    tracker, channel = scrum_targets
    rule_set("cross_team_coordination", is_enabled=False)  # the same breaches would propose that one too
    sla_failures(api, 3)
    result = detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="sla_misses")
    assert (result.proposed, fallout.status, fallout.owner_team) == (1, FalloutStatus.PROPOSED, channel.team)
    [message] = Notification.objects.filter(fallout=fallout)
    assert message.channel == channel and not Notification.objects.filter(tracker=tracker).exists()
    assert message.data["url"].endswith(f"/admin/escalation/fallout/{fallout.pk}/change/")
    assert "confirm or dismiss" in message.body


def test_confirming_in_the_admin_opens_the_fallout_and_its_ticket(api, scrum_targets, scrum_master, recorder):
    recorder.script("/repos/acme/process/issues", Answer(201, {"number": 3, "html_url": "https://github.com/p/3"}))
    tracker, _ = scrum_targets
    sla_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="sla_misses")

    response = logged_in(scrum_master).post(FALLOUTS, {"action": "confirm", "_selected_action": [fallout.pk]})
    assert response.status_code == 302
    fallout.refresh_from_db()
    assert (fallout.status, fallout.decided_by, fallout.decided_at is not None) == (
        FalloutStatus.OPEN,
        scrum_master,
        True,
    )
    assert Notification.objects.filter(fallout=fallout, tracker=tracker).count() == 1
    notifications_deliver(now=timezone.now())
    assert Fallout.objects.get(pk=fallout.pk).ticket_key == "#3"
    audit = AuditEntry.objects.filter(content_type__model="fallout", object_id=str(fallout.pk)).order_by("id").last()
    assert audit.actor == scrum_master and audit.after["status"] == FalloutStatus.OPEN


def test_dismissing_asks_for_a_reason_then_records_who_when_and_why(api, senior_dev_triage):
    sla_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="sla_misses")
    client = logged_in(senior_dev_triage)
    body = {"action": "dismiss", "_selected_action": [fallout.pk]}

    page = client.post(FALLOUTS, body)
    assert page.status_code == 200 and fallout.title in page.content.decode()
    refused = client.post(FALLOUTS, {**body, "apply": "1", "reason": "  "})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    assert Fallout.objects.get(pk=fallout.pk).status == FalloutStatus.PROPOSED

    done = client.post(FALLOUTS, {**body, "apply": "1", "reason": "a holiday week: nobody was on call"})
    assert done.status_code == 302
    fallout.refresh_from_db()
    assert (fallout.status, fallout.decided_by, fallout.decision_reason) == (
        FalloutStatus.DISMISSED, senior_dev_triage, "a holiday week: nobody was on call"
    )  # fmt: skip
    audit = AuditEntry.objects.filter(content_type__model="fallout", object_id=str(fallout.pk)).order_by("id").last()
    assert "a holiday week" in audit.reason and audit.actor == senior_dev_triage


def test_a_dismissed_fallout_is_not_proposed_again_from_the_same_triggers(api):
    old = sla_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="sla_misses")
    fallout_dismiss(fallout_id=fallout.pk, actor=Actor.task("test"), now=timezone.now(), reason="known")
    detect_patterns(now=timezone.now())
    assert list(Fallout.objects.filter(rule__code="sla_misses").values_list("status", flat=True)) == ["dismissed"]
    new = sla_failures(api, 3, at=timezone.now())  # breached after the dismissal
    detect_patterns(now=timezone.now())
    proposed = Fallout.objects.get(rule__code="sla_misses", status=FalloutStatus.PROPOSED)
    assert failure_ids(proposed) == set(new) and not set(new) & set(old)


def test_closing_in_the_admin_closes_an_open_fallout(api, scrum_master):
    runner_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="runner_hardening")
    logged_in(scrum_master).post(FALLOUTS, {"action": "close", "_selected_action": [fallout.pk]})
    fallout.refresh_from_db()
    assert (fallout.status, fallout.decided_by) == (FalloutStatus.CLOSED, scrum_master)


def test_decisions_follow_the_fallouts_state_and_the_role(api, qa_analyst):
    sla_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="sla_misses")
    with pytest.raises(RoleRequired):
        fallout_confirm(fallout_id=fallout.pk, actor=Actor.of_user(qa_analyst, "admin"), now=timezone.now())
    with pytest.raises(FalloutReasonRequired):
        fallout_dismiss(fallout_id=fallout.pk, actor=Actor.task("test"), now=timezone.now(), reason="")
    with pytest.raises(FalloutNotDecidable):
        fallout_close(fallout_id=fallout.pk, actor=Actor.task("test"), now=timezone.now())
    fallout_confirm(fallout_id=fallout.pk, actor=Actor.task("test"), now=timezone.now())
    with pytest.raises(FalloutNotDecidable):
        fallout_dismiss(fallout_id=fallout.pk, actor=Actor.task("test"), now=timezone.now(), reason="too late")
    assert Fallout.objects.get(pk=fallout.pk).status == FalloutStatus.OPEN


def test_the_fallout_page_lists_its_triggering_failures_with_links(api, qa_analyst):
    ids = runner_failures(api, 3)
    detect_patterns(now=timezone.now())
    fallout = Fallout.objects.get(rule__code="runner_hardening")
    page = logged_in(qa_analyst).get(reverse("admin:escalation_fallout_change", args=[fallout.pk]))
    assert page.status_code == 200
    for pk in ids:
        assert reverse("admin:escalation_failure_change", args=[pk]) in page.content.decode()


# --- tuning the rules in the admin ---


def rule_form(client: Client, rule: FalloutRule, **changes):
    url = reverse("admin:escalation_falloutrule_change", args=[rule.pk])
    data = {
        "threshold": rule.threshold,
        "window": str(rule.window),
        "scope": rule.scope,
        "ratio_percent": rule.ratio_percent or "",
        "min_samples": rule.min_samples or "",
        "is_enabled": "on" if rule.is_enabled else "",
        **changes,
        "_save": "Save",
    }
    return client.post(url, {k: v for k, v in data.items() if v != ""})


def test_lowering_a_threshold_in_the_admin_turns_two_triggers_into_a_fallout(api, qa_analyst):
    rule = FalloutRule.objects.get(code="generator_complexity")
    reported(api, 2, type="generator_drift")
    detect_patterns(now=timezone.now())
    assert not Fallout.objects.filter(rule=rule).exists()

    response = rule_form(logged_in(qa_analyst), rule, threshold=2)
    assert response.status_code == 302
    detect_patterns(now=timezone.now())
    assert Fallout.objects.get(rule=rule).detail["threshold"] == 2
    audit = AuditEntry.objects.get(content_type__model="falloutrule", object_id=str(rule.pk))
    assert (audit.before["threshold"], audit.after["threshold"], audit.actor) == (3, 2, qa_analyst)


def test_changing_the_scope_in_the_admin_counts_per_repository(api, scrum_master):
    rule = FalloutRule.objects.get(code="connection_pool")
    for repository in ("acme/shop", "acme/api"):
        reported(api, 3, type="database_connectivity", repository=repository)
    assert rule_form(logged_in(scrum_master), rule, scope="repository").status_code == 302
    detect_patterns(now=timezone.now())
    keys = set(Fallout.objects.filter(rule=rule).values_list("scope_key", flat=True))
    assert keys == {"acme/shop", "acme/api"}


def test_a_scope_the_detector_cannot_count_is_refused_with_the_reason(qa_analyst):
    rule = FalloutRule.objects.get(code="sla_misses")
    response = rule_form(logged_in(qa_analyst), rule, scope="runner_label")
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["scope"]
    assert errors == [
        "SLA misses cannot be counted per runner label; its detector supports: per failure type (failure_type), "
        "everywhere (global), per repository (repository), per owning team (team), per repository and job (job)"
    ]
    assert FalloutRule.objects.get(pk=rule.pk).scope == "failure_type"


def test_a_rule_without_its_ratio_is_refused(qa_analyst):
    rule = FalloutRule.objects.get(code="build_performance")
    response = rule_form(logged_in(qa_analyst), rule, ratio_percent="")
    assert response.status_code == 200
    assert "Build performance needs ratio_percent" in response.context["adminform"].form.errors["ratio_percent"][0]


def test_a_developer_cannot_tune_a_rule(backend_developer):
    rule = FalloutRule.objects.get(code="generator_complexity")
    assert rule_form(logged_in(backend_developer), rule, threshold=1).status_code == 403
    assert FalloutRule.objects.get(pk=rule.pk).threshold == 3


# --- schedule, task, command ---


def test_detection_is_scheduled_every_15_minutes():
    schedule = Schedule.objects.get(name="detect-patterns")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (
        "escalation.tasks.detect_patterns", Schedule.MINUTES, 15
    )  # fmt: skip


def test_the_task_runs_detection_and_returns_its_summary(api):
    runner_failures(api, 3)
    summary = tasks.detect_patterns()
    assert summary.startswith("8 fallout rules run, 1 patterns found: 1 fallouts opened")
    assert Fallout.objects.filter(rule__code="runner_hardening").count() == 1


def test_the_command_detects_as_of_the_given_time_and_prints_one_line(api, capsys):
    ids = runner_failures(api, 3)
    at = timezone.now() + timedelta(hours=25)  # the reports are out of the window by then
    call_command("detect_patterns", "--at", at.isoformat())
    assert capsys.readouterr().out.strip() == (
        "8 fallout rules run, 0 patterns found: 0 fallouts opened, 0 proposed, 0 updated"
    )
    call_command("detect_patterns")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "1 fallouts opened" in out
    assert failure_ids(Fallout.objects.get()) == set(ids)


def test_the_command_refuses_a_time_that_is_not_iso_8601():
    with pytest.raises(CommandError, match="ISO 8601"):
        call_command("detect_patterns", "--at", "yesterday")


def test_a_rule_whose_scope_was_set_outside_the_admin_is_skipped_and_named(api):
    FalloutRule.objects.filter(code="sla_misses").update(scope="runner_label")
    summary = detect_patterns(now=timezone.now()).summary()
    assert summary.startswith("7 fallout rules run") and "sla_misses: SLA misses cannot be counted" in summary


def test_the_detail_is_json_with_the_figures(api):
    runner_failures(api, 3)
    detect_patterns(now=timezone.now())
    detail = Fallout.objects.get().detail
    assert json.loads(json.dumps(detail)) == detail
    assert {"count", "threshold", "window", "since", "until", "scope_label"} <= set(detail)
    assert detail["window"] == "1 d"
