"""GET /api/v1/failures/: the list with its filters and pagination, the detail, who may read them;
the OpenAPI schema and docs page; the health endpoints."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from escalation.choices import Scope
from escalation.models import Failure, IngestSource
from escalation.services.ingestion import EventInput, event_ingest
from escalation.services.sources import source_create
from portal.audit import Actor
from tests.factories import IdentityFactory, TeamFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/failures/"

EVENT = {
    "source": "github-actions",
    "repository": "acme/shop",
    "branch": "main",
    "commit": "9f1c2e7",
    "commit_author": "dev@example.com",
    "run_id": "1001",
    "job": "unit-tests",
    "status": "failure",
    "log_excerpt": "FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4",
}


@pytest.fixture
def source(api) -> IngestSource:
    """The source behind the `api` client's token."""
    return IngestSource.objects.get(name="ci")


def report(source: IngestSource, **changes) -> Failure | None:
    """Ingest one CI event through the service, as the events endpoint does."""
    result = event_ingest(ingest_source=source, data=EventInput(**{**EVENT, **changes}), now=timezone.now())
    return result.failure


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def client_with_scopes(*scopes: str) -> Client:
    _, token = source_create(name="narrow", scopes=list(scopes), actor=Actor.task("test"), now=timezone.now())
    return Client(headers={"authorization": f"Bearer {token}"})


@pytest.fixture
def assorted(source) -> dict[str, Failure]:
    """Failures that differ in one filterable property each."""
    unit = report(source)
    integration = report(source, job="api-tests", type="integration_test")
    other_repository = report(source, repository="acme/billing")
    feature = report(source, branch="feature/cart", run_id="1002")
    resolved = report(source, job="lint", type="build_error")
    report(source, job="lint", run_id="1003", status="success")
    resolved.refresh_from_db()
    return {
        "unit": unit,
        "integration": integration,
        "other_repository": other_repository,
        "feature": feature,
        "resolved": resolved,
    }


def test_the_list_is_paginated_with_count_and_next(api, source):
    for n in range(5):
        report(source, job=f"job-{n}")
    first = api.get(URL, {"page_size": 2}).json()
    assert first["count"] == 5
    assert len(first["results"]) == 2
    assert first["next"] is not None and "page=2" in first["next"]
    assert first["previous"] is None
    last = api.get(URL, {"page_size": 2, "page": 3}).json()
    assert len(last["results"]) == 1
    assert last["next"] is None


def test_the_list_shows_the_failure_fields(api, source):
    failure = report(source)
    row = api.get(URL).json()["results"][0]
    assert row["id"] == failure.id
    assert row["type"] == "unit_test"
    assert row["status"] == "open"
    assert row["repository"] == "acme/shop"
    assert row["branch"] == "main"
    assert row["job"] == "unit-tests"
    assert row["owner"] == "Senior Dev Triage"
    assert row["secondary_owner"] == "QA"
    assert row["occurrence_count"] == 1
    assert row["breached"] is False
    assert row["fingerprint"] == failure.fingerprint


def test_a_page_past_the_end_answers_404(api, source):
    report(source)
    response = api.get(URL, {"page": 9})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


FILTER_CASES = [
    ({"status": "resolved"}, {"resolved"}),
    ({"status": "open"}, {"unit", "integration", "other_repository", "feature"}),
    ({"type": "integration_test"}, {"integration"}),
    ({"type": "build_error"}, {"resolved"}),
    ({"repository": "acme/billing"}, {"other_repository"}),
    ({"branch": "feature/cart"}, {"feature"}),
    ({"team": "Backend"}, {"integration"}),
    ({"team": "senior dev triage", "status": "open"}, {"unit", "other_repository", "feature"}),
    ({"repository": "acme/shop", "branch": "main", "status": "open"}, {"unit", "integration"}),
]


@pytest.mark.parametrize(
    ("params", "expected"),
    FILTER_CASES,
    ids=["&".join(f"{k}={v}" for k, v in params.items()) for params, _ in FILTER_CASES],
)
def test_the_list_filters(api, assorted, params, expected):
    assert ids(api.get(URL, params)) == {assorted[name].id for name in expected}


def test_the_breached_filter_finds_open_failures_past_their_due_time(api, assorted):
    past = timezone.now() - timedelta(minutes=1)
    Failure.objects.filter(pk__in=[assorted["unit"].pk, assorted["resolved"].pk]).update(sla_due_at=past)
    breached = api.get(URL, {"breached": "true"})
    assert ids(breached) == {assorted["unit"].id}
    assert breached.json()["results"][0]["breached"] is True
    not_breached = ids(api.get(URL, {"breached": "false"}))
    assert not_breached == {f.id for name, f in assorted.items() if name != "unit"}


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "exploded"}, "status"), ({"type": "flaky"}, "type"), ({"breached": "perhaps"}, "breached")],
    ids=["status", "type", "breached"],
)
def test_an_unknown_filter_value_answers_400_naming_the_filter(api, assorted, params, field):
    response = api.get(URL, params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid"
    assert body["detail"].startswith(f"{field}:")
    assert field in body["fields"]


@pytest.fixture
def thirty_failures(source) -> list[Failure]:
    """Thirty failures spread over repositories, types, owner teams and assignees."""
    people = [
        IdentityFactory(value=f"dev{n}@example.com", person__team=TeamFactory(name=f"Squad {n}")) for n in range(5)
    ]
    types = ["unit_test", "integration_test", "database_test", "ci_runner", "build_error", "auth_change"]
    failures = []
    for n in range(30):
        failure = report(
            source,
            repository=f"acme/repo-{n % 4}",
            branch="main" if n % 3 else "feature/x",
            job=f"job-{n}",
            run_id=f"run-{n}",
            type=types[n % len(types)],
            commit_author=people[n % len(people)].value,
        )
        report(
            source,
            job=f"job-{n}",
            run_id=f"rerun-{n}",
            repository=f"acme/repo-{n % 4}",
            branch="main" if n % 3 else "feature/x",
            type=types[n % len(types)],
        )
        failures.append(failure)
    assert Failure.objects.count() == 30
    return failures


def test_the_list_of_thirty_failures_stays_under_a_query_ceiling(api, thirty_failures, django_assert_max_num_queries):
    with django_assert_max_num_queries(4):  # token, count, page; one spare
        response = api.get(URL, {"page_size": 100})
    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == 30
    assignees = {f.id: f.assignee.name if f.assignee else None for f in Failure.objects.select_related("assignee")}
    assert {row["id"]: row["assignee"] for row in rows} == assignees
    assert len({row["assignee"] for row in rows} - {None}) == 5
    assert len({row["owner"] for row in rows}) > 5


def test_the_detail_stays_under_a_query_ceiling(api, thirty_failures, django_assert_max_num_queries):
    failure = thirty_failures[7]
    with django_assert_max_num_queries(5):  # token, failure, timeline, occurrences; one spare
        response = api.get(f"{URL}{failure.id}/")
    assert response.status_code == 200
    assert response.json()["occurrence_count"] == 2


def test_the_detail_carries_the_matrix_snapshot_timeline_and_occurrences(api, source):
    failure = report(source, run_id="1001")
    report(source, run_id="1002", commit="a1b2c3d")
    response = api.get(f"{URL}{failure.id}/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == failure.id
    assert body["matrix_snapshot"]["failure_type"] == "unit_test"
    assert body["matrix_snapshot"]["sla_budget"] == 4 * 3600
    assert body["matrix_snapshot"]["primary_owner"] == "code_author"
    assert [entry["kind"] for entry in body["timeline"]] == ["opened"]
    assert body["timeline"][0]["source"] == "api"
    assert body["timeline"][0]["actor"] == "source:ci"
    assert [o["run_id"] for o in body["recent_occurrences"]] == ["1002", "1001"]
    assert body["recent_occurrences"][0]["commit"] == "a1b2c3d"


def test_the_detail_of_an_unknown_failure_answers_404(api, source):
    response = api.get(f"{URL}999999/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_a_token_without_the_read_scope_gets_403_naming_the_scope(source):
    client = client_with_scopes(Scope.INGEST, Scope.REQUEST)
    response = client.get(URL)
    assert response.status_code == 403
    assert response.json() == {"error": "permission_denied", "detail": "the token lacks the 'read' scope"}


def test_a_token_with_only_the_read_scope_can_read(source):
    failure = report(source)
    client = client_with_scopes(Scope.READ)
    assert ids(client.get(URL)) == {failure.id}


def test_an_anonymous_request_gets_401(source):
    report(source)
    response = Client().get(URL)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_a_logged_in_user_with_a_role_can_read(client, source, qa_analyst):
    failure = report(source)
    client.force_login(qa_analyst)
    assert ids(client.get(URL)) == {failure.id}
    detail = client.get(f"{URL}{failure.id}/")
    assert detail.status_code == 200
    assert detail.json()["id"] == failure.id


def test_a_logged_in_user_without_a_role_gets_403(client, source, outsider):
    failure = report(source)
    client.force_login(outsider)
    for path in (URL, f"{URL}{failure.id}/"):
        response = client.get(path)
        assert response.status_code == 403
        assert response.json()["error"] == "permission_denied"


def test_the_failures_api_is_read_only(api, source):
    failure = report(source)
    assert api.post(URL, {}, content_type="application/json").status_code == 405
    response = api.delete(f"{URL}{failure.id}/")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert Failure.objects.filter(pk=failure.pk).exists()


# --- the OpenAPI schema and the docs page ---

HTTP_METHODS = {"get", "put", "patch", "post", "delete", "head", "options", "trace"}


def schema(client: Client) -> dict:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


def test_the_schema_is_an_openapi_document_with_the_api_paths(db):
    document = schema(Client())
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/events/", "/api/v1/failures/", "/api/v1/failures/{id}/"} <= set(document["paths"])
    assert "post" in document["paths"]["/api/v1/events/"]
    assert "get" in document["paths"]["/api/v1/failures/{id}/"]


def test_every_operation_in_the_schema_is_described(db):
    document = schema(Client())
    undescribed = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS and not (operation.get("description") or operation.get("summary"))
    ]
    assert undescribed == []


def test_the_schema_names_the_bearer_token_and_the_list_filters(db):
    document = schema(Client())
    schemes = document["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    parameters = {p["name"] for p in document["paths"]["/api/v1/failures/"]["get"]["parameters"]}
    assert {"status", "type", "team", "repository", "branch", "breached", "page", "page_size"} <= parameters


def test_the_docs_page_renders_for_a_logged_in_user(client, qa_analyst):
    client.force_login(qa_analyst)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/schema/" in response.content


def test_the_docs_and_schema_are_public(db):
    # Chosen on purpose: they describe the API, hold no data, and CI integrators have tokens, not logins.
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "/api/v1/events/" in schema(Client())["paths"]


# --- health ---


def test_healthz_answers_200(db):
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_answers_200_with_the_database_and_migrations_ok(db):
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["migrations"] == "ok"
