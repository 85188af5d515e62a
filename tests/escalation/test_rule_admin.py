"""Rules in the admin: a save first shows its preview, "Try it" runs the rule on pasted text and saves
nothing, RE2's refusals are explained, and the preview page applies or discards through the services."""

import pytest
from django.test import Client
from django.urls import reverse

from escalation.choices import FailureType, RuleChangeStatus
from escalation.models import ClassificationRule, Failure, RuleChange
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

RULES = reverse("admin:escalation_classificationrule_changelist")
ADD = reverse("admin:escalation_classificationrule_add")
DISK = "write /var/lib/docker/tmp/GetImageBlob812: no space left on device"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_url(rule) -> str:
    return reverse("admin:escalation_classificationrule_change", args=[rule.pk])


def form_data(client: Client, rule, **changes) -> dict:
    form = client.get(change_url(rule)).context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    return {**{k: v for k, v in data.items() if v is not None}, **changes, "_save": "Save"}


NEW = {
    "name": "widget",
    "stage": "20",
    "position": "225",
    "field": "log",
    "event_field": "",
    "pattern": "widget frobnication failed",
    "failure_type": FailureType.TEST_ENVIRONMENT,
    "tags": "flaky_suspect",
    "is_enabled": "on",
    "description": "",
    "sample_text": "",
}


@pytest.fixture
def disk_failure(api) -> Failure:
    return report_failure(api, type="", job="deploy", log_excerpt=DISK)


def test_saving_an_edit_shows_its_preview_before_anything_changes(disk_failure, qa_analyst):
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    client = logged_in(qa_analyst)

    response = client.post(change_url(rule), form_data(client, rule, pattern="(ENOSPC)"), follow=True)

    change = RuleChange.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:escalation_rulechange_change", args=[change.pk])
    page = response.content.decode()
    assert "Nothing is saved yet" in page
    assert f"#{disk_failure.pk}" in page and "ci_runner" in page and "build_error" in page
    assert "Apply: save the rule and reclassify 1 failure(s)" in page
    rule.refresh_from_db()
    assert (rule.version, rule.pattern.startswith("(No space")) == (1, True)

    applied = client.post(reverse("admin:rulechange_apply", args=[change.pk]), follow=True)

    assert "applied" in [str(m) for m in applied.context["messages"]][0]
    rule.refresh_from_db()
    assert (rule.version, rule.pattern) == (2, "(ENOSPC)")
    assert Failure.objects.get(pk=disk_failure.pk).failure_type == FailureType.BUILD_ERROR


def test_discarding_a_previewed_change_leaves_the_rule_as_it_was(disk_failure, qa_analyst):
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    client = logged_in(qa_analyst)
    client.post(change_url(rule), form_data(client, rule, pattern="(ENOSPC)"))
    change = RuleChange.objects.get()

    client.post(reverse("admin:rulechange_discard", args=[change.pk]))

    change.refresh_from_db()
    assert change.status == RuleChangeStatus.DISCARDED
    assert ClassificationRule.objects.get(pk=rule.pk).version == 1


def test_try_it_runs_the_rule_as_edited_on_pasted_text_and_saves_nothing(qa_analyst):
    sample = "step 1\nERROR: widget frobnication failed on shard 3\nexit 1"

    response = logged_in(qa_analyst).post(ADD, {**NEW, "sample_text": sample, "_try": "Try it"})

    assert response.status_code == 200
    page = response.content.decode()
    assert "This rule matches: <code>ERROR: widget frobnication failed on shard 3</code>" in page
    assert "<strong>test_environment</strong>" in page and "flaky_suspect" in page
    assert not ClassificationRule.objects.filter(name="widget").exists()
    assert not RuleChange.objects.exists()


def test_try_it_shows_what_the_whole_rule_set_makes_of_a_sample_the_rule_misses(qa_analyst):
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    client = logged_in(qa_analyst)
    data = form_data(client, rule, pattern="(ENOSPC)", sample_text=DISK, _try="Try it")

    page = client.post(change_url(rule), data).content.decode()

    assert "This rule does not match the sample." in page
    assert "<strong>build_error</strong>" in page and "fallback" in page
    assert ClassificationRule.objects.get(pk=rule.pk).pattern != "(ENOSPC)"


def test_try_it_with_a_pattern_re2_refuses_says_why(qa_analyst):
    page = logged_in(qa_analyst).post(ADD, {**NEW, "pattern": r"error(?= in)", "sample_text": "x", "_try": "Try it"})
    assert "look-ahead (?=...) is not supported" in page.content.decode()


def test_saving_a_pattern_re2_refuses_names_the_reason_on_the_pattern(qa_analyst):
    response = logged_in(qa_analyst).post(ADD, {**NEW, "pattern": r"(fail)\1 again", "_save": "Save"})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["pattern"]
    assert "backreferences (\\1) are not supported" in errors["pattern"][0]
    assert not ClassificationRule.objects.filter(name="widget").exists()


def test_adding_a_rule_that_changes_no_recent_failure_is_saved_at_once(qa_analyst):
    response = logged_in(qa_analyst).post(ADD, {**NEW, "_save": "Save"}, follow=True)

    rule = ClassificationRule.objects.get(name="widget")
    assert (rule.version, rule.tags, rule.stage) == (1, ["flaky_suspect"], 20)
    assert "the preview found no failure of the last 30 days" in [str(m) for m in response.context["messages"]][0]


def test_deleting_a_rule_with_recent_failures_previews_first(disk_failure, qa_analyst):
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    client = logged_in(qa_analyst)

    response = client.post(reverse("admin:escalation_classificationrule_delete", args=[rule.pk]), {"post": "yes"})

    change = RuleChange.objects.get()
    assert response.url == reverse("admin:escalation_rulechange_change", args=[change.pk])
    assert ClassificationRule.objects.filter(pk=rule.pk).exists()
    client.post(reverse("admin:rulechange_apply", args=[change.pk]))
    assert not ClassificationRule.objects.filter(pk=rule.pk).exists()
    assert Failure.objects.get(pk=disk_failure.pk).classified_by == "fallback"


def test_a_running_preview_shows_its_progress_and_refreshes(disk_failure, qa_analyst, settings):
    settings.PORTAL_RULE_SYNC_LIMIT = 0
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    client = logged_in(qa_analyst)

    response = client.post(change_url(rule), form_data(client, rule, pattern="(ENOSPC)"), follow=True)

    page = response.content.decode()
    assert "is being previewed as a task" in page
    assert '<meta http-equiv="refresh"' in page and "Preview running" in page


def test_the_rule_list_shows_stage_version_and_triage_record(qa_analyst):
    response = logged_in(qa_analyst).get(RULES)

    assert response.status_code == 200
    rules = list(response.context["cl"].result_list)
    assert [r.name for r in rules[:2]] == ["runner-rate-limit", "runner-lost"]
    page = response.content.decode()
    for header in ("Stage", "Version", "Matches", "Confirmed", "Corrected", "Precision"):
        assert f">{header}<" in page


def test_the_rule_page_shows_its_versions(disk_failure, qa_analyst):
    rule = ClassificationRule.objects.get(name="runner-disk-network")
    client = logged_in(qa_analyst)
    client.post(change_url(rule), form_data(client, rule, pattern="(ENOSPC)"))
    client.post(reverse("admin:rulechange_apply", args=[RuleChange.objects.get().pk]))

    page = client.get(change_url(rule)).content.decode()

    assert "<td>v2</td><td>update</td>" in page and "<td>v1</td><td>create</td>" in page
    assert "<code>(ENOSPC)</code>" in page
    assert "1 failures decided" not in page and "0 failures decided" in page
