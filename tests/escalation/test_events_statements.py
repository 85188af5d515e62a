"""Statements per event on PostgreSQL: the ingestion fast path (bench/ingest.py) stays a few statements each.

The ceilings count everything the request runs, the token lookup included; inside the test transaction
BEGIN and COMMIT are a savepoint and its release, and a rollback is two statements.
"""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escalation.models import Failure, FailureOccurrence, TimelineEntry
from escalation.services.failures.reporting import _RECUR_SQL
from portal.models import AuditEntry
from tests.factories import EVENT

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"


def post(api, **changes):
    """Post one event; the response and the statements it ran."""
    with CaptureQueriesContext(connection) as statements:
        response = api.post(URL, {**EVENT, **changes}, content_type="application/json")
    return response, len(statements)


def test_each_kind_of_event_runs_a_few_statements_and_stores_its_rows(api, settings):
    settings.PORTAL_CONFIG_CACHE_SECONDS = 300  # as in production: the routing configuration is cached
    post(api, run_id="warm-up", job="another job")
    post(api, run_id="warm-up-2", job="another job")  # the repository is cached once it has committed

    opened, new_statements = post(api, run_id="1")
    failure = Failure.objects.get(id=opened.json()["id"])
    assert opened.status_code == 201 and new_statements <= 5
    assert TimelineEntry.objects.filter(failure=failure, kind="opened").count() == 1
    assert AuditEntry.objects.filter(object_id=str(failure.id), action="create", after__id=failure.id).count() == 1

    repeat, repeat_statements = post(api, run_id="2")
    assert repeat.status_code == 201 and repeat_statements <= 4
    assert repeat.json()["id"] == failure.id and repeat.json()["occurrences"] == 2
    assert FailureOccurrence.objects.filter(failure=failure).count() == 2

    duplicate, duplicate_statements = post(api, run_id="2")
    assert duplicate.status_code == 200 and duplicate_statements <= 7
    assert FailureOccurrence.objects.filter(failure=failure).count() == 2

    recovered, success_statements = post(api, run_id="3", status="success")
    assert recovered.status_code == 201 and success_statements <= 6
    assert recovered.json()["recovered"] == [failure.id]
    assert TimelineEntry.objects.filter(failure=failure, kind="resolved").count() == 1
    assert AuditEntry.objects.filter(object_id=str(failure.id), action="update", after__status="resolved").exists()


def prepared_statements() -> dict[str, int]:
    """This connection's prepared statements: text -> times run."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def test_the_statements_each_event_runs_are_prepared_once_per_connection(api):
    for n in range(4):
        post(api, run_id=f"open-{n}", job=f"job {n}")
        post(api, run_id=f"repeat-{n}", job=f"job {n}")
    post(api, run_id="pass-0", job="job 0", status="success")
    post(api, run_id="pass-1", job="job 1", status="success")

    prepared = prepared_statements()
    recurrences = [runs for text, runs in prepared.items() if "occurrence_count = occurrence_count + 1" in text]
    openings = [runs for text, runs in prepared.items() if 'INSERT INTO "escalation_failure"' in text]
    assert recurrences == [8]  # one statement text for every failing event, opening or recurring
    assert openings == [4]
    assert Failure.objects.filter(occurrence_count=2).count() == 4


def generic_plan(statement: str, arguments: str) -> str:
    """The generic plan of a statement (``$n`` placeholders) prepared with these arguments: planned without
    their values, as PostgreSQL may run a prepared statement. Scans are made dear (the test tables are
    tiny, where a scan would win on cost)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"PREPARE generic AS {statement}")
        try:
            cursor.execute(f"EXPLAIN EXECUTE generic({arguments})")
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE generic")


def test_the_recurrence_finds_the_open_failure_by_its_index_in_a_generic_plan(db):
    """The open statuses must be literals in a prepared statement, or the partial index on open
    fingerprints cannot serve its generic plan."""
    numbers = iter(range(1, 10))
    plan = generic_plan(re.sub("%s", lambda _: f"${next(numbers)}", _RECUR_SQL), "now(), now(), 1, 'fingerprint'")
    assert "one_open_failure_per_fingerprint" in plan, plan


def test_a_success_finds_its_jobs_open_failures_by_their_index_in_a_generic_plan(api):
    post(api, run_id="1")
    recovered, _ = post(api, run_id="2", status="success")
    assert len(recovered.json()["recovered"]) == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%%AND job_name = $3 AND%%'")
        (statement,) = cursor.fetchone()
        # The index on repository alone may serve too; without it, only the partial index on open jobs can.
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'escalation_failure'"
            " AND indexdef LIKE '%%(repository_id)%%'"
        )
        for (index,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{index}"')  # rolled back with the test
    plan = generic_plan(statement, "1, 'main', 'job'")
    assert "failure_open_job_idx" in plan, plan


def test_a_success_with_nothing_open_stores_its_event_and_looks_once(api, settings):
    settings.PORTAL_CONFIG_CACHE_SECONDS = 300
    post(api, run_id="warm-up", status="success")
    post(api, run_id="warm-up-2", status="success")
    passed, statements = post(api, run_id="1", status="success")
    assert passed.status_code == 201 and statements <= 5
    assert passed.json()["recovered"] == []
