"""The admin: failure triage through the failure services, configuration edits through the audited
configuration service, and the read-only audit log. Each action and edit once, proving it calls through."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_duration

from escalation.choices import ChangeSource, FailureStatus, FailureType, Resolution
from escalation.models import ClassificationRule, Failure, IngestSource, MatrixRow, Person, Team
from escalation.models.failures import TimelineKind
from escalation.services.failures import failures_acknowledge, failures_resolve
from portal.audit import Actor
from portal.models import AuditAction, AuditEntry
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

FAILURE_CHANGELIST = reverse("admin:escalation_failure_changelist")
AUDIT_CHANGELIST = reverse("admin:portal_auditentry_changelist")


def report(api, **fields) -> Failure:
    return report_failure(api, **fields)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def listed(client: Client, url: str, **params) -> set[int]:
    response = client.get(url, params)
    assert response.status_code == 200  # an unknown filter redirects with ?e=1
    return {obj.pk for obj in response.context["cl"].result_list}


def failure_entries(failure: Failure):
    return AuditEntry.objects.filter(content_type=ContentType.objects.get_for_model(Failure), object_id=str(failure.pk))


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


# --- the failure changelist ---


@pytest.fixture
def triage_board(api, qa_analyst):
    """Four failures that differ in type, owner, status, branch, repository and due time."""
    long_ago = (timezone.now() - timedelta(days=2)).isoformat()
    failures = {
        "overdue": report(api, finished_at=long_ago),
        "runner": report(api, job="build", type=FailureType.CI_RUNNER, branch="release/1.2"),
        "feature": report(api, job="db-tests", type=FailureType.DATABASE_TEST, branch="feature/cart"),
        "payments": report(api, repository="acme/payments", job="lint", type=FailureType.BUILD_ERROR),
    }
    failures_acknowledge(
        failure_ids=[failures["payments"].pk],
        actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN),
        now=timezone.now(),
    )
    return {name: Failure.objects.get(pk=f.pk) for name, f in failures.items()}


def test_the_failure_changelist_filters_by_type_owner_status_due_and_branch(triage_board, qa_analyst):
    client = logged_in(qa_analyst)
    ids = {name: f.pk for name, f in triage_board.items()}
    devops = Team.objects.get(name="DevOps")

    assert listed(client, FAILURE_CHANGELIST) == set(ids.values())
    assert listed(client, FAILURE_CHANGELIST, failure_type__exact="ci_runner") == {ids["runner"]}
    assert listed(client, FAILURE_CHANGELIST, owner_team__id__exact=devops.pk) == {ids["runner"]}
    assert listed(client, FAILURE_CHANGELIST, status__exact="acknowledged") == {ids["payments"]}
    assert listed(client, FAILURE_CHANGELIST, overdue="yes") == {ids["overdue"]}
    assert listed(client, FAILURE_CHANGELIST, overdue="no") == set(ids.values()) - {ids["overdue"]}
    assert listed(client, FAILURE_CHANGELIST, branch__exact="feature/cart") == {ids["feature"]}


def test_the_failure_changelist_searches_repository_job_and_branch(triage_board, qa_analyst):
    client = logged_in(qa_analyst)
    assert listed(client, FAILURE_CHANGELIST, q="acme/payments") == {triage_board["payments"].pk}
    assert listed(client, FAILURE_CHANGELIST, q="db-tests") == {triage_board["feature"].pk}
    assert listed(client, FAILURE_CHANGELIST, q="release/1.2") == {triage_board["runner"].pk}


def test_a_resolved_failure_is_never_overdue(api, qa_analyst):
    failure = report(api, finished_at=(timezone.now() - timedelta(days=2)).isoformat())
    failures_resolve(
        failure_ids=[failure.pk],
        resolution=Resolution.FIXED,
        actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN),
        now=timezone.now(),
    )
    client = logged_in(qa_analyst)
    assert listed(client, FAILURE_CHANGELIST, overdue="yes") == set()
    assert listed(client, FAILURE_CHANGELIST, overdue="no") == {failure.pk}


# --- failure actions ---


@pytest.mark.parametrize(
    ("action", "extra", "expected", "kind"),
    [
        ("acknowledge", {}, {"status": FailureStatus.ACKNOWLEDGED}, TimelineKind.ACKNOWLEDGED),
        (
            "resolve_fixed",
            {},
            {"status": FailureStatus.RESOLVED, "resolution": Resolution.FIXED},
            TimelineKind.RESOLVED,
        ),
        (
            "resolve_false_positive",
            {},
            {"status": FailureStatus.RESOLVED, "resolution": Resolution.FALSE_POSITIVE},
            TimelineKind.RESOLVED,
        ),
        (
            "correct_type",
            {"failure_type": FailureType.CI_RUNNER},
            {"status": FailureStatus.OPEN, "failure_type": FailureType.CI_RUNNER},
            TimelineKind.TYPE_CORRECTED,
        ),
        (
            "set_resolution_plan",
            {"plan_due": "2099-01-31"},
            {"status": FailureStatus.OPEN, "resolution_plan": "seen"},
            TimelineKind.PLAN_SET,
        ),
    ],
)
def test_a_failure_action_changes_the_row_and_writes_timeline_and_audit(api, qa_analyst, action, extra, expected, kind):
    failure = report(api)
    client = logged_in(qa_analyst)

    response = client.post(
        FAILURE_CHANGELIST,
        {"action": action, "_selected_action": [failure.pk], "failure_type": "", "note": "seen", **extra},
        follow=True,
    )

    failure.refresh_from_db()
    assert {field: getattr(failure, field) for field in expected} == expected
    assert [m.level_tag for m in response.context["messages"]] == ["info"]
    entry = failure.timeline.order_by("-at", "-id").first()
    assert (entry.kind, entry.source, entry.actor) == (kind, ChangeSource.ADMIN, qa_analyst.username)
    audit = failure_entries(failure).get(source=ChangeSource.ADMIN)
    assert (audit.action, audit.actor, audit.actor_label) == (
        AuditAction.UPDATE,
        qa_analyst,
        qa_analyst.username,
    )
    assert audit.before["status"] == FailureStatus.OPEN
    assert audit.before["failure_type"] == FailureType.UNIT_TEST
    assert {field: audit.after[field] for field in expected} == expected


def test_correcting_the_type_of_a_resolved_failure_shows_the_error_and_changes_nothing(api, qa_analyst):
    failure = report(api)
    failures_resolve(
        failure_ids=[failure.pk],
        resolution=Resolution.FIXED,
        actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN),
        now=timezone.now(),
    )
    entries_before = failure_entries(failure).count()

    response = logged_in(qa_analyst).post(
        FAILURE_CHANGELIST,
        {"action": "correct_type", "_selected_action": [failure.pk], "failure_type": FailureType.CI_RUNNER},
        follow=True,
    )

    failure.refresh_from_db()
    assert failure.failure_type == FailureType.UNIT_TEST
    assert failure_entries(failure).count() == entries_before
    assert [(m.level_tag, str(m)) for m in response.context["messages"]] == [
        ("error", f"failure {failure.pk} is resolved")
    ]


def test_correcting_a_mixed_selection_corrects_the_open_failures_and_names_the_refused_one(api, qa_analyst):
    open_failure = report(api, job="unit-tests")
    resolved = report(api, job="unit-tests-2")
    failures_resolve(
        failure_ids=[resolved.pk],
        resolution=Resolution.FIXED,
        actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN),
        now=timezone.now(),
    )

    response = logged_in(qa_analyst).post(
        FAILURE_CHANGELIST,
        {
            "action": "correct_type",
            "_selected_action": [open_failure.pk, resolved.pk],
            "failure_type": FailureType.CI_RUNNER,
        },
        follow=True,
    )

    open_failure.refresh_from_db()
    resolved.refresh_from_db()
    assert (open_failure.failure_type, resolved.failure_type) == (FailureType.CI_RUNNER, FailureType.UNIT_TEST)
    assert sorted((m.level_tag, str(m)) for m in response.context["messages"]) == [
        ("error", f"failure {resolved.pk} is resolved"),
        ("info", "1 failure(s) now ci_runner."),
    ]


# --- configuration edits ---


def change_form_data(client: Client, obj, **changes) -> dict:
    """The admin change form of ``obj`` as this user sees it, with ``changes`` applied, ready to POST."""
    response = client.get(change_url(obj))
    assert response.status_code == 200
    form = response.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    return {**{k: v for k, v in data.items() if v is not None}, **changes, "_save": "Save"}


def test_a_matrix_edit_is_audited_and_governs_new_failures_while_open_ones_keep_their_snapshot(
    api, scrum_master, settings
):
    settings.PORTAL_CONFIG_CACHE_SECONDS = 3600  # the edit itself must refresh this process's cached config
    existing = report(api, job="unit-tests")
    assert existing.matrix_snapshot["sla_budget"] == 4 * 3600
    row = MatrixRow.objects.get(failure_type=FailureType.UNIT_TEST)
    client = logged_in(scrum_master)

    response = client.post(change_url(row), change_form_data(client, row, sla_budget="06:00:00"))

    assert response.status_code == 302
    row.refresh_from_db()
    assert row.sla_budget == timedelta(hours=6)
    audit = AuditEntry.objects.get(content_type=ContentType.objects.get_for_model(MatrixRow))
    assert (audit.source, audit.action, audit.actor, audit.object_id) == (
        ChangeSource.ADMIN,
        AuditAction.UPDATE,
        scrum_master,
        str(row.pk),
    )
    assert parse_duration(audit.before["sla_budget"]) == timedelta(hours=4)
    assert parse_duration(audit.after["sla_budget"]) == timedelta(hours=6)

    new = report(api, job="unit-tests-shard-2")
    assert new.matrix_snapshot["sla_budget"] == 6 * 3600
    assert new.sla_due_at == new.first_seen_at + timedelta(hours=6)
    recurring = report(api, job="unit-tests")
    assert recurring.pk == existing.pk and recurring.occurrence_count == 2
    assert recurring.matrix_snapshot["sla_budget"] == 4 * 3600
    assert recurring.sla_due_at == existing.sla_due_at


RULE_FORM = {
    "name": "broken",
    "position": "50",
    "field": "log",
    "event_field": "",
    "pattern": "(unclosed",
    "failure_type": FailureType.CI_RUNNER,
    "is_enabled": "on",
    "description": "",
    "_save": "Save",
}


def test_adding_a_classification_rule_with_an_invalid_regex_is_refused_and_stores_nothing(qa_analyst):
    rules_before = ClassificationRule.objects.count()

    response = logged_in(qa_analyst).post(reverse("admin:escalation_classificationrule_add"), RULE_FORM)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["pattern"]
    assert "does not compile" in errors["pattern"][0]
    assert ClassificationRule.objects.count() == rules_before
    assert not AuditEntry.objects.filter(content_type=ContentType.objects.get_for_model(ClassificationRule)).exists()


def test_editing_a_classification_rule_to_an_invalid_regex_keeps_the_old_pattern(qa_analyst):
    rule = ClassificationRule.objects.order_by("position", "id").first()
    pattern = rule.pattern
    client = logged_in(qa_analyst)

    response = client.post(change_url(rule), change_form_data(client, rule, pattern="(unclosed"))

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["pattern"]
    rule.refresh_from_db()
    assert rule.pattern == pattern
    assert not AuditEntry.objects.filter(source=ChangeSource.ADMIN).exists()


def test_deleting_a_classification_rule_in_the_admin_is_audited_with_its_last_state(qa_analyst):
    rule = ClassificationRule.objects.order_by("position", "id").first()

    response = logged_in(qa_analyst).post(
        reverse("admin:escalation_classificationrule_delete", args=[rule.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not ClassificationRule.objects.filter(pk=rule.pk).exists()
    audit = AuditEntry.objects.get(content_type=ContentType.objects.get_for_model(ClassificationRule))
    assert (audit.action, audit.source, audit.actor, audit.object_id) == (
        AuditAction.DELETE,
        ChangeSource.ADMIN,
        qa_analyst,
        str(rule.pk),
    )
    assert (audit.before["name"], audit.before["pattern"], audit.after) == (rule.name, rule.pattern, None)


def person_form(team: Team, identity: str) -> dict:
    return {
        "name": "Dana",
        "team": team.pk,
        "user": "",
        "identities-TOTAL_FORMS": "1",
        "identities-INITIAL_FORMS": "0",
        "identities-MIN_NUM_FORMS": "0",
        "identities-MAX_NUM_FORMS": "1000",
        "identities-0-value": identity,
        "_save": "Save",
    }


def test_adding_a_person_with_an_identity_audits_both_and_routes_their_commits(api, scrum_master):
    backend = Team.objects.get(name="Backend")

    response = logged_in(scrum_master).post(
        reverse("admin:escalation_person_add"), person_form(backend, "dana@example.com")
    )

    assert response.status_code == 302
    person = Person.objects.get(name="Dana")
    assert list(person.identities.values_list("value", flat=True)) == ["dana@example.com"]
    audited = AuditEntry.objects.filter(source=ChangeSource.ADMIN, actor=scrum_master, action=AuditAction.CREATE)
    assert sorted(audited.values_list("content_type__model", flat=True)) == ["identity", "person"]
    failure = report(api, commit_author="dana@example.com", job="compile", type=FailureType.BUILD_ERROR)
    assert (failure.assignee, failure.owner_team) == (person, backend)


def test_an_identity_typed_with_capitals_in_the_admin_still_matches_its_commits(api, scrum_master):
    backend = Team.objects.get(name="Backend")
    logged_in(scrum_master).post(reverse("admin:escalation_person_add"), person_form(backend, "Dana@Example.com"))

    failure = report(api, commit_author="dana@example.com", job="compile", type=FailureType.BUILD_ERROR)

    assert failure.assignee == Person.objects.get(name="Dana")


def test_an_ingest_source_edit_takes_only_known_scopes_and_is_audited(api, devops_specialist):
    source = IngestSource.objects.get(name="ci")
    client = logged_in(devops_specialist)
    url = change_url(source)

    refused = client.post(url, change_form_data(client, source, scopes=["ingest", "admin"]))
    narrowed = client.post(url, change_form_data(client, source, scopes=["ingest"]))

    assert refused.status_code == 200 and list(refused.context["adminform"].form.errors) == ["scopes"]
    assert narrowed.status_code == 302
    source.refresh_from_db()
    assert source.scopes == ["ingest"]
    audit = AuditEntry.objects.get(content_type=ContentType.objects.get_for_model(IngestSource), source="admin")
    assert (audit.before["scopes"], audit.after["scopes"]) == (["ingest", "read", "request"], ["ingest"])
    assert audit.actor == devops_specialist
    assert api.get("/api/v1/failures/").status_code == 403


# --- the audit log ---


def test_the_audit_log_is_visible_but_nobody_can_add_change_or_delete_entries(api, qa_analyst, admin_client):
    report(api)
    entry = AuditEntry.objects.first()
    client = logged_in(qa_analyst)

    assert client.get(AUDIT_CHANGELIST).status_code == 200
    view = client.get(change_url(entry))
    assert view.status_code == 200 and not view.context["has_change_permission"]
    for user_client in (client, admin_client):
        assert user_client.get(reverse("admin:portal_auditentry_add")).status_code == 403
        assert user_client.post(change_url(entry), {"reason": "edited"}).status_code == 403
        delete_url = reverse("admin:portal_auditentry_delete", args=[entry.pk])
        assert user_client.post(delete_url, {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.reason == ""
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_the_audit_log_filters_by_source_and_action(api, qa_analyst):
    failure = report(api)
    failures_acknowledge(
        failure_ids=[failure.pk], actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN), now=timezone.now()
    )
    client = logged_in(qa_analyst)
    by_admin = set(AuditEntry.objects.filter(source=ChangeSource.ADMIN).values_list("pk", flat=True))
    creates = set(AuditEntry.objects.filter(action=AuditAction.CREATE).values_list("pk", flat=True))

    assert by_admin and creates and not by_admin & creates
    assert listed(client, AUDIT_CHANGELIST, source__exact="admin") == by_admin
    assert listed(client, AUDIT_CHANGELIST, action__exact="create") == creates


def test_the_failure_page_links_to_exactly_that_failures_audit_entries(api, qa_analyst):
    failure = report(api)
    other = report(api, job="e2e")
    failures_acknowledge(
        failure_ids=[failure.pk, other.pk],
        actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN),
        now=timezone.now(),
    )
    client = logged_in(qa_analyst)

    page = client.get(change_url(failure)).content.decode()

    link = html.unescape(re.search(r'href="([^"]*auditentry/\?[^"]*)"', page).group(1))
    assert link == f"{AUDIT_CHANGELIST}?content_type__model=failure&object_id={failure.pk}"
    response = client.get(link)
    assert response.status_code == 200
    shown = {entry.pk for entry in response.context["cl"].result_list}
    assert shown == set(failure_entries(failure).values_list("pk", flat=True))
    assert len(shown) == 2  # opened through the API, acknowledged in the admin


# --- query count ---


def test_the_failure_changelist_with_30_failures_uses_a_bounded_number_of_queries(
    api, qa_analyst, django_assert_max_num_queries
):
    for n in range(30):
        report(
            api,
            repository=f"acme/repo-{n % 5}",
            branch=("main", "release/1.0", f"feature/{n}")[n % 3],
            job=f"job-{n}",
            type=(FailureType.UNIT_TEST, FailureType.CI_RUNNER, FailureType.DATABASE_TEST)[n % 3],
        )
    client = logged_in(qa_analyst)

    with django_assert_max_num_queries(12):
        response = client.get(FAILURE_CHANGELIST)

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 30


def test_a_resolution_stores_who_resolved_it_with_its_values_and_audits_them(api, qa_analyst):
    failure = report(api)
    now = timezone.now()
    failures_resolve(
        failure_ids=[failure.pk],
        resolution=Resolution.FIXED,
        actor=Actor.of_user(qa_analyst, ChangeSource.ADMIN),
        now=now,
        note="fixed in #42",
    )
    failure.refresh_from_db()
    assert (failure.status, failure.resolution, failure.resolved_at) == (FailureStatus.RESOLVED, "fixed", now)
    assert (failure.resolved_by, failure.resolution_note) == (qa_analyst, "fixed in #42")
    entry = AuditEntry.objects.get(object_id=str(failure.pk), action="update")
    assert (entry.before["status"], entry.after["status"]) == ("open", "resolved")
    assert (entry.after["resolved_by"], entry.actor) == (qa_analyst.pk, qa_analyst)
