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
    assert recovered.status_code == 201 and success_statements <= 7
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


def test_the_recurrence_finds_the_open_failure_by_its_index_in_a_generic_plan(db):
    """A prepared statement may run a generic plan, planned without the parameters' values: the open
    statuses must be literals there, or the partial index on open fingerprints cannot serve it."""
    numbers = iter(range(1, 10))
    sql = re.sub("%s", lambda _: f"${next(numbers)}", _RECUR_SQL)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")  # the test table is tiny: a scan would win on cost
        cursor.execute(f"PREPARE recur AS {sql}")
        try:
            cursor.execute("EXPLAIN EXECUTE recur(now(), now(), 1, 'fingerprint')")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE recur")
    assert "one_open_failure_per_fingerprint" in plan, plan
