"""GET /api/v1/fallouts/: the list with its filters and pagination, the detail, who may read them, the schema."""

import pytest
from django.test import Client
from django.utils import timezone

from escalation.models import Fallout
from escalation.services.fallout import detect_patterns, fallout_close
from escalation.services.sources import source_create
from portal.audit import Actor
from tests.escalation.fallout_support import reported

pytestmark = pytest.mark.django_db

URL = "/api/v1/fallouts/"


@pytest.fixture
def found(api) -> dict[str, Fallout]:
    """An open infrastructure fallout, a proposed generator one and a closed one."""
    runner = reported(api, 3, type="ci_runner", runner="gh-large-x64")
    reported(api, 3, type="generator_drift")
    reported(api, 3, type="database_connectivity")
    detect_patterns(now=timezone.now())
    pool = Fallout.objects.get(rule__code="connection_pool")
    fallout_close(fallout_id=pool.pk, actor=Actor.task("test"), now=timezone.now(), reason="a planned failover")
    return {
        "runner": Fallout.objects.get(rule__code="runner_hardening"),
        "generator": Fallout.objects.get(rule__code="generator_complexity"),
        "pool": Fallout.objects.get(pk=pool.pk),
        "runner_ids": runner,
    }


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_the_list_shows_every_field_of_a_fallout(api, found):
    response = api.get(URL, {"rule": "runner_hardening"})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1 and set(body) >= {"count", "next", "results"}
    [row] = body["results"]
    fallout = found["runner"]
    assert row == {
        "id": fallout.pk,
        "rule": "runner_hardening",
        "rule_name": "Runner hardening",
        "category": "infrastructure",
        "scope": "runner_label",
        "scope_key": "gh-large-x64",
        "status": "open",
        "title": "Runner hardening: gh-large-x64",
        "detail": fallout.detail,
        "ticket_key": "",
        "ticket_url": "",
        "opened_at": row["opened_at"],
        "updated_at": row["updated_at"],
        "decided_at": None,
        "decision_reason": "",
        "failure_ids": sorted(found["runner_ids"]),
    }
    assert row["opened_at"].startswith(fallout.opened_at.date().isoformat())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"runner", "generator", "pool"}),
        ({"status": "open"}, {"runner"}),
        ({"status": "proposed"}, {"generator"}),
        ({"status": "closed"}, {"pool"}),
        ({"rule": "generator_complexity"}, {"generator"}),
        ({"rule": "connection_pool", "status": "open"}, set()),
    ],
    ids=["all", "open", "proposed", "closed", "rule", "rule-and-status"],
)
def test_the_filters_select_by_status_and_rule(api, found, params, expected):
    assert ids(api.get(URL, params)) == {found[name].pk for name in expected}


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "exploded"}, "status"), ({"rule": "no_such_rule"}, "rule")],
    ids=["status", "rule"],
)
def test_an_unknown_filter_value_answers_400_naming_the_filter(api, found, params, field):
    response = api.get(URL, params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid" and body["detail"].startswith(f"{field}:")


def test_the_detail_shows_one_fallout_and_an_unknown_id_answers_404(api, found):
    pool = found["pool"]
    response = api.get(f"{URL}{pool.pk}/")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["decision_reason"]) == ("closed", "a planned failover")
    assert api.get(f"{URL}999999/").status_code == 404


def test_the_list_pages_like_the_failures_list(api, found):
    first = api.get(URL, {"page_size": 2}).json()
    assert (first["count"], len(first["results"])) == (3, 2) and first["next"]
    second = api.get(first["next"])
    assert len(second.json()["results"]) == 1


def test_a_token_without_the_read_scope_is_refused_and_no_token_is_unauthenticated(db, found):
    _, token = source_create(name="ingest-only", scopes=["ingest"], actor=Actor.task("test"), now=timezone.now())
    refused = Client(headers={"authorization": f"Bearer {token}"}).get(URL)
    assert refused.status_code == 403 and "read" in refused.json()["detail"]
    assert Client().get(URL).status_code in (401, 403)


def test_a_logged_in_role_may_read_the_list(found, product_owner):
    client = Client()
    client.force_login(product_owner)
    assert ids(client.get(URL)) == {found[name].pk for name in ("runner", "generator", "pool")}


def test_the_list_query_count_does_not_grow_with_the_fallouts(api, found, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):
        assert ids(api.get(URL)) == {found[name].pk for name in ("runner", "generator", "pool")}


def test_the_schema_describes_the_fallout_endpoints(api):
    schema = Client().get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/fallouts/", "/api/v1/fallouts/{id}/"} <= set(paths)
    params = {p["name"] for p in paths["/api/v1/fallouts/"]["get"]["parameters"]}
    assert {"status", "rule", "page"} <= params
