"""GET /api/v1/classification/rules/ (each rule's record from triage), GET /api/v1/signatures/ (unique errors)
and the signature in a failure's answer and filter; the similar failures on a failure's admin page."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from escalation.choices import ChangeSource, FailureType
from escalation.models import ClassificationRule, Failure, Team
from escalation.services.failures import failure_correct_type
from escalation.services.sources import source_create
from escalation.services.triage import failures_confirm_type
from portal.audit import Actor
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

RULES = "/api/v1/classification/rules/"
SIGNATURES = "/api/v1/signatures/"
REFUSED = 'psycopg.OperationalError: connection to server at "{}", port {} failed: Connection refused'


def report(api, **changes) -> Failure:
    return report_failure(api, **{"type": "", **changes})


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_rules_come_in_precedence_order_with_matches_confirmations_corrections_and_precision(api, qa_analyst):
    actor = Actor.of_user(qa_analyst, ChangeSource.ADMIN)
    failures = [report(api, job=f"db-{n}", log_excerpt=REFUSED.format("db", 5432)) for n in range(3)]
    failures_confirm_type(failure_ids=[failures[0].pk, failures[1].pk], actor=actor, now=timezone.now())
    failure_correct_type(failure_id=failures[2].pk, failure_type=FailureType.CI_RUNNER, actor=actor, now=timezone.now())

    response = api.get(RULES, {"page_size": 500})

    assert response.status_code == 200
    rules = response.json()["results"]
    assert response.json()["count"] == ClassificationRule.objects.count() == len(rules)
    ranks = [(r["stage"], r["position"], r["id"]) for r in rules]
    assert ranks == sorted(ranks)
    by_name = {r["name"]: r for r in rules}
    db = by_name["database-unreachable"]
    assert (db["matches"], db["confirmations"], db["corrections"], db["precision"]) == (3, 2, 1, 0.6667)
    assert (db["stage"], db["stage_label"], db["version"], db["tags"]) == (
        10,
        "1. Infrastructure causes in the log",
        1,
        [],
    )
    assert by_name["runner-rate-limit"]["tags"] == ["rate_limited"]
    assert by_name["runner-lost"]["precision"] is None


def test_the_rules_filter_by_type_and_stage_and_refuse_an_unknown_value(api):
    infra = api.get(RULES, {"stage": 10, "page_size": 500}).json()["results"]
    assert {r["failure_type"] for r in infra} == {"ci_runner", "database_connectivity", "test_environment"}
    assert {r["name"] for r in api.get(RULES, {"type": "auth_change"}).json()["results"]} == {
        "auth-token-errors",
        "job-auth",
        "test-auth",
    }
    assert api.get(RULES, {"stage": "first"}).status_code == 400


def test_a_logged_in_person_with_the_view_permission_reads_the_rules_and_an_outsider_does_not(qa_analyst, outsider):
    assert logged_in(qa_analyst).get(RULES).status_code == 200
    assert logged_in(outsider).get(RULES).status_code == 403


@pytest.fixture
def signatures(api) -> dict[str, Failure]:
    """The same database outage in three jobs of two repositories, and one other error."""
    long_ago = (timezone.now() - timedelta(days=3)).isoformat()
    backend = Team.objects.get(name="Backend")
    return {
        "a": report(
            api, job="db-migrate", log_excerpt=f"setup\n{REFUSED.format('10.0.0.5', 5432)}", finished_at=long_ago
        ),
        "b": report(api, job="api-tests", log_excerpt=REFUSED.format("10.0.0.9", 5433)),
        "c": report(api, repository="acme/billing", job="worker", log_excerpt=REFUSED.format("db-2", 6432)),
        "other": report(api, job="lint", log_excerpt="✖ 3 problems (2 errors, 1 warning)", type="integration_test"),
        "team": backend,
    }


def test_the_top_signatures_group_the_same_error_across_jobs_and_repositories(api, signatures):
    response = api.get(SIGNATURES)

    assert response.status_code == 200
    top, second = response.json()["results"]
    expected = "psycopg.operationalerror: connection to server at <str>, port <n> failed: connection refused"
    assert (top["signature"], top["count"], top["occurrences"]) == (expected, 3, 3)
    assert top["teams"] == ["DevOps"]
    assert top["first_seen"] == signatures["a"].first_seen_at.isoformat().replace("+00:00", "Z")
    assert top["last_seen"] == max(f.last_seen_at for f in (signatures["b"], signatures["c"])).isoformat().replace(
        "+00:00", "Z"
    )
    assert (second["signature"], second["count"], second["teams"]) == ("✖ <n> problems (<n> errors, <n> warning)", 1,
                                                                       ["Backend"])  # fmt: skip


def test_the_signatures_filter_by_repository_team_and_time(api, signatures):
    def listed(**params):
        response = api.get(SIGNATURES, params)
        assert response.status_code == 200, response.content
        return {(row["signature"][:10], row["count"]) for row in response.json()["results"]}

    assert listed(repository="acme/billing") == {("psycopg.op", 1)}
    assert listed(team="backend") == {("✖ <n> prob", 1)}
    recent = (timezone.now() - timedelta(days=1)).isoformat()
    assert listed(since=recent) == {("psycopg.op", 2), ("✖ <n> prob", 1)}
    assert api.get(SIGNATURES, {"since": "yesterday"}).status_code == 400


def test_the_failure_answer_carries_its_signature_and_the_list_filters_by_it(api, signatures):
    detail = api.get(f"/api/v1/failures/{signatures['b'].pk}/").json()
    assert detail["signature"].startswith("psycopg.operationalerror: connection to server at <str>")
    assert (detail["tags"], detail["classification_rule_version"]) == ([], 1)

    same = api.get("/api/v1/failures/", {"signature": detail["signature"]}).json()["results"]
    assert {row["id"] for row in same} == {signatures[k].pk for k in "abc"}


def test_a_failures_admin_page_lists_its_similar_failures(signatures, qa_analyst):
    page = logged_in(qa_analyst).get(reverse("admin:escalation_failure_change", args=[signatures["a"].pk]))

    html = page.content.decode()
    for other in ("b", "c"):
        assert reverse("admin:escalation_failure_change", args=[signatures[other].pk]) in html
    assert "acme/billing:main worker" in html
    assert reverse("admin:escalation_failure_change", args=[signatures["other"].pk]) not in html
    assert "all failures with this signature" in html


def test_the_lists_use_a_bounded_number_of_queries(api, signatures, django_assert_max_num_queries):
    with django_assert_max_num_queries(4):
        assert api.get(SIGNATURES).status_code == 200
    with django_assert_max_num_queries(4):
        assert api.get(RULES, {"page_size": 500}).status_code == 200


def test_a_token_without_the_read_scope_is_refused(api):
    _, token = source_create(name="writer", scopes=["ingest"], actor=Actor.task("test"), now=timezone.now())
    client = Client(headers={"authorization": f"Bearer {token}"})
    assert client.get(SIGNATURES).status_code == 403
    assert client.get(RULES).status_code == 403
