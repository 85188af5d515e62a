"""Each role may do what portal.roles.CAPABILITIES says, and nothing else, through the real admin and services.

Every capability has a probe that uses it the way a person would (the admin changelist, an admin
action, an admin change form) and checks the row: changed when the role has the capability,
unchanged when it has not. Refused failure actions are also tried on the service directly, which
must raise RoleRequired whatever the caller.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from escalation.choices import (
    ChangeSource,
    FailureStatus,
    FailureType,
    FalloutCategory,
    FalloutStatus,
    Resolution,
    Role,
    RuleChangeKind,
    RuleChangeStatus,
    TriageVerdict,
)
from escalation.models import (
    ClassificationRule,
    ClockPause,
    Digest,
    EngineBeat,
    Escalation,
    Failure,
    FailureGroup,
    Fallout,
    FalloutRule,
    IngestSource,
    MatrixRow,
    Notification,
    NotificationChannel,
    RetryAdvice,
    Team,
    TicketTracker,
)
from escalation.services.failures import failure_correct_type, failures_acknowledge, failures_resolve
from escalation.services.fallout import fallout_dismiss
from escalation.services.rule_changes import rule_change_apply, rule_change_submit
from escalation.services.sources import source_create
from escalation.services.triage import failures_confirm_type
from portal.audit import Actor
from portal.errors import RoleRequired
from portal.roles import CAPABILITIES, Capability, role_permissions, role_table_markdown
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

FAILURE_CHANGELIST = reverse("admin:escalation_failure_changelist")
TRIAGE_QUEUE = reverse("admin:escalation_failureawaitingtriage_changelist")
_run_ids = itertools.count(1)


@dataclass
class Ctx:
    """A persona logged in to the admin, plus what a probe needs to set the scene."""

    user: object
    client: Client
    admin_client: Client
    api: Client

    def failure(self, **fields) -> Failure:
        """A failure opened the way CI opens one: through the events API."""
        return report_failure(self.api, **fields)

    def actor(self) -> Actor:
        return Actor.of_user(self.user, ChangeSource.ADMIN)


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def change_form_data(admin_client: Client, obj, **changes) -> dict:
    """The admin change form of ``obj`` as a superuser sees it, with ``changes`` applied, ready to POST."""
    response = admin_client.get(change_url(obj))
    assert response.status_code == 200
    form = response.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    return {**{k: v for k, v in data.items() if v is not None}, **changes, "_save": "Save"}


def action_body(action: str, failure: Failure, **extra) -> dict:
    return {"action": action, "_selected_action": [failure.pk], "failure_type": "", "note": "", **extra}


def offered_actions(client: Client, changelist: str = FAILURE_CHANGELIST) -> set[str]:
    """The failure actions the changelist offers this user (none when it refuses the page)."""
    response = client.get(changelist)
    if response.status_code != 200 or response.context["action_form"] is None:
        return set()
    return {value for value, _ in response.context["action_form"].fields["action"].choices if value}


# --- probes: use one capability, assert it worked (allowed) or changed nothing (refused) ---


def probe_view(ctx: Ctx, allowed: bool) -> None:
    failure = ctx.failure()
    urls = [
        FAILURE_CHANGELIST,
        change_url(failure),
        reverse("admin:escalation_matrixrow_changelist"),
        reverse("admin:escalation_classificationrule_changelist"),
        reverse("admin:escalation_team_changelist"),
        reverse("admin:portal_auditentry_changelist"),
        reverse("admin:escalation_failureawaitingtriage_changelist"),
        reverse("admin:escalation_rulechange_changelist"),
        reverse("admin:escalation_classificationruleversion_changelist"),
    ]
    expected = 200 if allowed else 403
    assert {url: ctx.client.get(url).status_code for url in urls} == dict.fromkeys(urls, expected)


def probe_acknowledge(ctx: Ctx, allowed: bool) -> None:
    failure = ctx.failure()
    assert ("acknowledge" in offered_actions(ctx.client)) is allowed
    ctx.client.post(FAILURE_CHANGELIST, action_body("acknowledge", failure))
    failure.refresh_from_db()
    if allowed:
        assert failure.status == FailureStatus.ACKNOWLEDGED
        assert failure.acknowledged_by == ctx.user
        return
    assert failure.status == FailureStatus.OPEN
    with pytest.raises(RoleRequired):
        failures_acknowledge(failure_ids=[failure.pk], actor=ctx.actor(), now=timezone.now())
    failure.refresh_from_db()
    assert failure.status == FailureStatus.OPEN


def probe_resolve(ctx: Ctx, allowed: bool) -> None:
    failure = ctx.failure()
    offered = offered_actions(ctx.client)
    assert ({"resolve_fixed", "resolve_false_positive"} <= offered) is allowed
    assert bool({"resolve_fixed", "resolve_false_positive"} & offered) is allowed
    ctx.client.post(FAILURE_CHANGELIST, action_body("resolve_fixed", failure))
    failure.refresh_from_db()
    if allowed:
        assert (failure.status, failure.resolution) == (FailureStatus.RESOLVED, Resolution.FIXED)
        return
    assert (failure.status, failure.resolution) == (FailureStatus.OPEN, "")
    with pytest.raises(RoleRequired):
        failures_resolve(failure_ids=[failure.pk], resolution=Resolution.FIXED, actor=ctx.actor(), now=timezone.now())
    failure.refresh_from_db()
    assert failure.status == FailureStatus.OPEN


def probe_correct_type(ctx: Ctx, allowed: bool) -> None:
    failure = ctx.failure()
    assert ("correct_type" in offered_actions(ctx.client)) is allowed
    ctx.client.post(FAILURE_CHANGELIST, action_body("correct_type", failure, failure_type=FailureType.CI_RUNNER))
    failure.refresh_from_db()
    if allowed:
        assert failure.failure_type == FailureType.CI_RUNNER
        return
    assert failure.failure_type == FailureType.UNIT_TEST
    with pytest.raises(RoleRequired):
        failure_correct_type(
            failure_id=failure.pk, failure_type=FailureType.CI_RUNNER, actor=ctx.actor(), now=timezone.now()
        )
    failure.refresh_from_db()
    assert failure.failure_type == FailureType.UNIT_TEST


def _probe_change_form(ctx: Ctx, allowed: bool, obj, changes: dict, read: Callable) -> None:
    """POST a change through the admin change form; the row changes exactly when allowed."""
    before = read(obj)
    data = change_form_data(ctx.admin_client, obj, **changes)
    get = ctx.client.get(change_url(obj))
    response = ctx.client.post(change_url(obj), data)
    obj.refresh_from_db()
    if allowed:
        assert get.status_code == 200 and get.context["has_change_permission"]
        assert response.status_code == 302, response.context and response.context["adminform"].form.errors
        assert read(obj) != before
    else:
        assert get.status_code == 403 or not get.context["has_change_permission"]
        assert response.status_code == 403
        assert read(obj) == before


def probe_matrix(ctx: Ctx, allowed: bool) -> None:
    row = MatrixRow.objects.get(failure_type=FailureType.UNIT_TEST)
    _probe_change_form(ctx, allowed, row, {"sla_budget": "06:00:00"}, lambda r: r.sla_budget)
    if allowed:
        assert row.sla_budget == timedelta(hours=6)


def probe_rules(ctx: Ctx, allowed: bool) -> None:
    rule = ClassificationRule.objects.order_by("position", "id").first()
    _probe_change_form(ctx, allowed, rule, {"description": "edited in a role test"}, lambda r: r.description)
    if allowed:
        assert rule.description == "edited in a role test"


def probe_teams(ctx: Ctx, allowed: bool) -> None:
    team = Team.objects.get(name="QA")
    _probe_change_form(ctx, allowed, team, {"slack_channel": "#qa-edited"}, lambda t: t.slack_channel)
    if allowed:
        assert team.slack_channel == "#qa-edited"


def probe_ingest_sources(ctx: Ctx, allowed: bool) -> None:
    ingest_source, _ = source_create(name="jenkins", actor=Actor.task("test"), now=timezone.now())
    source = IngestSource.objects.get(pk=ingest_source.pk)
    _probe_change_form(ctx, allowed, source, {"is_active": False}, lambda s: s.is_active)
    if allowed:
        assert source.is_active is False


def probe_confirm_type(ctx: Ctx, allowed: bool) -> None:
    failure = ctx.failure()
    assert ("confirm_type" in offered_actions(ctx.client, TRIAGE_QUEUE)) is allowed
    ctx.client.post(reverse("admin:triage_confirm", args=[failure.pk]))
    failure.refresh_from_db()
    if allowed:
        assert (failure.triage_verdict, failure.triaged_by, failure.status) == (
            TriageVerdict.CONFIRMED,
            ctx.user,
            FailureStatus.ACKNOWLEDGED,
        )
        return
    assert (failure.triage_verdict, failure.status) == ("", FailureStatus.OPEN)
    with pytest.raises(RoleRequired):
        failures_confirm_type(failure_ids=[failure.pk], actor=ctx.actor(), now=timezone.now())
    assert Failure.objects.get(pk=failure.pk).triage_verdict == ""


def probe_apply_rule_change(ctx: Ctx, allowed: bool) -> None:
    ctx.failure(type="", job="deploy", log_excerpt="write /var/lib/docker/tmp/x: no space left on device")
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    change = rule_change_submit(kind=RuleChangeKind.UPDATE, rule=rule, proposed={"pattern": "(ENOSPC)"},
                                actor=Actor.task("test"), now=timezone.now())  # fmt: skip
    assert change.status == RuleChangeStatus.PREVIEWED
    page = ctx.client.get(reverse("admin:escalation_rulechange_change", args=[change.pk]))
    ctx.client.post(reverse("admin:rulechange_apply", args=[change.pk]))
    change.refresh_from_db()
    rule.refresh_from_db()
    if allowed:
        assert "Apply: save the rule" in page.content.decode()
        assert (change.status, rule.version, rule.pattern) == (RuleChangeStatus.APPLIED, 2, "(ENOSPC)")
        return
    assert "Apply: save the rule" not in page.content.decode()
    assert (change.status, rule.version) == (RuleChangeStatus.PREVIEWED, 1)
    with pytest.raises(RoleRequired):
        rule_change_apply(change_id=change.pk, actor=ctx.actor(), now=timezone.now())
    assert ClassificationRule.objects.get(pk=rule.pk).version == 1


ENGINE_MODELS = (Escalation, ClockPause, FailureGroup, Notification, NotificationChannel, TicketTracker, EngineBeat)


def probe_view_engine(ctx: Ctx, allowed: bool) -> None:
    """The engine's records: every one of their admin pages, and the view permission of each model."""
    EngineBeat.objects.create(name="worker", at=timezone.now())
    perms = [f"escalation.view_{model._meta.model_name}" for model in ENGINE_MODELS]
    assert {perm: ctx.user.has_perm(perm) for perm in perms} == dict.fromkeys(perms, allowed)
    urls = [
        reverse(f"admin:escalation_{model._meta.model_name}_changelist")
        for model in ENGINE_MODELS
        if admin.site.is_registered(model)
    ]
    assert reverse("admin:escalation_enginebeat_changelist") in urls
    expected = 200 if allowed else 403
    assert {url: ctx.client.get(url).status_code for url in urls} == dict.fromkeys(urls, expected)


def probe_resolution_plan(ctx: Ctx, allowed: bool) -> None:
    assert ctx.user.has_perm("escalation.set_resolution_plan") is allowed
    assert ("set_resolution_plan" in offered_actions(ctx.client)) is allowed


def probe_mark_complex(ctx: Ctx, allowed: bool) -> None:
    assert ctx.user.has_perm("escalation.mark_failure_complex") is allowed
    assert ("mark_complex" in offered_actions(ctx.client)) is allowed


def _probe_add_form(ctx: Ctx, allowed: bool, model, data: dict) -> None:
    """POST the admin add form; a row appears exactly when allowed."""
    url = reverse(f"admin:escalation_{model._meta.model_name}_add")
    before = model.objects.count()
    get = ctx.client.get(url)
    response = ctx.client.post(url, {**data, "_save": "Save"})
    if allowed:
        assert get.status_code == 200
        assert response.status_code == 302, response.context and response.context["adminform"].form.errors
        assert model.objects.count() == before + 1
    else:
        assert (get.status_code, response.status_code) == (403, 403)
        assert model.objects.count() == before


def probe_channels_and_trackers(ctx: Ctx, allowed: bool) -> None:
    qa, backend = Team.objects.get(name="QA"), Team.objects.exclude(name="QA").order_by("name").first()
    _probe_add_form(ctx, allowed, NotificationChannel, {
        "team": qa.pk, "kind": "slack", "name": "#qa-alerts", "url": "https://hooks.slack.example/T1/B2",
        "secret": "", "email_to": "", "rate_limit_per_minute": 20, "is_enabled": "on",
    })  # fmt: skip
    _probe_add_form(ctx, allowed, TicketTracker, {
        "team": qa.pk, "kind": "github", "base_url": "https://api.github.com", "project": "acme/shop",
        "user": "", "token": "ghp_secret", "issue_type": "Task", "labels": "ci", "is_enabled": "on",
    })  # fmt: skip
    channel = NotificationChannel.objects.create(team=backend, kind="webhook", name="hook",
                                                 url="https://hooks.example/ci", secret="s3cret")  # fmt: skip
    _probe_change_form(ctx, allowed, channel, {"name": "hook-renamed", "secret": ""}, lambda c: c.name)
    assert channel.secret == "s3cret"  # left empty in the form: the stored secret stays
    assert "s3cret" not in ctx.client.get(change_url(channel)).content.decode()  # shown to nobody
    tracker = TicketTracker.objects.create(team=backend, kind="jira_v2", base_url="https://acme.example",
                                           project="OPS", token="jira-token")  # fmt: skip
    _probe_change_form(ctx, allowed, tracker, {"project": "OPS2", "token": ""}, lambda t: t.project)
    assert tracker.token == "jira-token"
    assert "jira-token" not in ctx.client.get(change_url(tracker)).content.decode()
    if allowed:
        assert (channel.name, tracker.project) == ("hook-renamed", "OPS2")
        assert TicketTracker.objects.get(team=qa).token == "ghp_secret"


def probe_retry_notifications(ctx: Ctx, allowed: bool) -> None:
    assert ctx.user.has_perm("escalation.retry_notification") is allowed
    assert ("retry" in offered_actions(ctx.client, reverse("admin:escalation_notification_changelist"))) is allowed


FALLOUT_MODELS = (Fallout, FalloutRule, RetryAdvice, Digest)
FALLOUT_CHANGELIST = reverse("admin:escalation_fallout_changelist")


def probe_view_fallouts(ctx: Ctx, allowed: bool) -> None:
    """Fallouts, fallout rules, retry advice and digests: the view permission of each, and their admin pages."""
    perms = [f"escalation.view_{model._meta.model_name}" for model in FALLOUT_MODELS]
    assert {perm: ctx.user.has_perm(perm) for perm in perms} == dict.fromkeys(perms, allowed)
    urls = [
        reverse(f"admin:escalation_{model._meta.model_name}_changelist")
        for model in FALLOUT_MODELS
        if admin.site.is_registered(model)
    ]
    assert {FALLOUT_CHANGELIST, reverse("admin:escalation_falloutrule_changelist")} <= set(urls)
    expected = 200 if allowed else 403
    assert {url: ctx.client.get(url).status_code for url in urls} == dict.fromkeys(urls, expected)


def probe_tune_fallout_rules(ctx: Ctx, allowed: bool) -> None:
    rule = FalloutRule.objects.get(code="generator_complexity")
    _probe_change_form(ctx, allowed, rule, {"threshold": 5}, lambda r: r.threshold)
    if allowed:
        assert rule.threshold == 5


def probe_decide_fallout(ctx: Ctx, allowed: bool) -> None:
    now = timezone.now()
    fallout = Fallout.objects.create(
        rule=FalloutRule.objects.get(code="generator_complexity"), category=FalloutCategory.TECHNICAL_DEBT,
        scope_key="global", title="Generator complexity: everywhere", status=FalloutStatus.PROPOSED,
        opened_at=now, updated_at=now,
    )  # fmt: skip
    fallout.failures.add(ctx.failure(type="generator_drift"))
    assert ({"confirm", "dismiss"} <= offered_actions(ctx.client, FALLOUT_CHANGELIST)) is allowed
    ctx.client.post(FALLOUT_CHANGELIST, {"action": "confirm", "_selected_action": [fallout.pk]})
    fallout.refresh_from_db()
    if allowed:
        assert (fallout.status, fallout.decided_by) == (FalloutStatus.OPEN, ctx.user)
        return
    assert fallout.status == FalloutStatus.PROPOSED
    with pytest.raises(RoleRequired):
        fallout_dismiss(fallout_id=fallout.pk, actor=ctx.actor(), now=timezone.now(), reason="not ours")
    assert Fallout.objects.get(pk=fallout.pk).status == FalloutStatus.PROPOSED


PROBES: dict[str, Callable[[Ctx, bool], None]] = {
    "View failures, timelines, the matrix, rules, teams and the audit log": probe_view,
    "Acknowledge failures": probe_acknowledge,
    "Resolve failures": probe_resolve,
    "Correct a failure's type": probe_correct_type,
    "Confirm a failure's type in triage": probe_confirm_type,
    "Edit the escalation matrix": probe_matrix,
    "Edit classification rules": probe_rules,
    "Apply a previewed classification rule change": probe_apply_rule_change,
    "Edit teams, people, ownership rules and branch policy": probe_teams,
    "Manage ingest sources and their tokens": probe_ingest_sources,
    "View escalations, clock pauses, failure groups, notifications, channels, trackers and the engine's health": (
        probe_view_engine
    ),
    "Set a failure's resolution plan": probe_resolution_plan,
    "Mark a failure complex": probe_mark_complex,
    "Manage notification channels and ticket trackers": probe_channels_and_trackers,
    "Retry dead notifications": probe_retry_notifications,
    "View fallouts, fallout rules, retry advice and digests": probe_view_fallouts,
    "Tune fallout rules (thresholds, windows, scope)": probe_tune_fallout_rules,
    "Confirm or dismiss a proposed fallout": probe_decide_fallout,
}

ALLOWED = [pytest.param(cap, role.value, id=f"{cap.name} | {role.value}") for cap in CAPABILITIES for role in cap.roles]
REFUSED = [
    pytest.param(cap, persona, id=f"{cap.name} | {persona}")
    for cap in CAPABILITIES
    for persona in [*(role.value for role in Role if role not in cap.roles), "outsider"]
]


@pytest.fixture
def ctx_for(request, admin_client, api):
    def make(persona: str) -> Ctx:
        user = request.getfixturevalue(persona)
        client = Client()
        client.force_login(user)
        return Ctx(user=user, client=client, admin_client=admin_client, api=api)

    return make


def test_every_capability_has_a_probe():
    assert set(PROBES) == {cap.name for cap in CAPABILITIES}


@pytest.mark.parametrize(("capability", "persona"), ALLOWED)
def test_a_role_with_a_capability_may_use_it(capability: Capability, persona: str, ctx_for):
    PROBES[capability.name](ctx_for(persona), allowed=True)


@pytest.mark.parametrize(("capability", "persona"), REFUSED)
def test_a_role_without_a_capability_is_refused_it(capability: Capability, persona: str, ctx_for):
    PROBES[capability.name](ctx_for(persona), allowed=False)


def test_the_readme_role_table_is_the_one_generated_from_the_capabilities():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    start = readme.find("| may |")
    assert start != -1, "README.md has no role table"
    table = readme[start:].split("\n\n", 1)[0].strip()
    assert table == role_table_markdown()


def test_the_eleven_role_groups_hold_exactly_their_capabilities_permissions():
    groups = Group.objects.filter(name__in=[role.label for role in Role]).prefetch_related("permissions__content_type")
    granted = {
        group.name: {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()} for group in groups
    }
    assert granted == {role.label: role_permissions(role) for role in Role}
    assert len(granted) == 11
