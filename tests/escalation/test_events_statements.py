"""Statements per event on PostgreSQL: the ingestion fast path (bench/ingest.py) stays a few statements each.

The counts are everything the request runs, the token lookup included, with no transaction around the
request as in production (django_db(transaction=True)), where no event runs BEGIN or COMMIT.
"""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escalation.models import CIEvent, CIJob, CIRun, Failure, FailureOccurrence, TimelineEntry
from escalation.services.failures.reporting import _RECUR_SQL
from portal.audit import row_state
from portal.models import AuditEntry
from tests.factories import EVENT

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"


def post(api, **changes):
    """Post one event; the response and the statements it ran."""
    with CaptureQueriesContext(connection) as statements:
        response = api.post(URL, {**EVENT, **changes}, content_type="application/json")
    return response, len(statements)


# serialized_rollback restores the data migrations' rows for the tests after these.
in_autocommit = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@in_autocommit
def test_each_kind_of_event_runs_one_or_two_statements_and_stores_its_rows(api, settings):
    settings.PORTAL_CONFIG_CACHE_SECONDS = 300  # as in production: the routing configuration is cached
    post(api, run_id="warm-up", job="another job")  # the repository is stored,
    post(api, run_id="warm-up-2", job="another job")  # then found and cached
    rows = row_counts()

    opened, new_statements = post(api, run_id="1")
    failure = Failure.objects.get(id=opened.json()["id"])
    assert opened.status_code == 201 and new_statements == 3  # token; nothing open; the rows with the failure
    assert TimelineEntry.objects.filter(failure=failure, kind="opened").count() == 1
    audit = AuditEntry.objects.get(object_id=str(failure.id), action="create")
    assert audit.after == row_state(failure)  # the run's and the event's ids, taken in the statement, included
    assert audit.after["latest_run"] == failure.latest_run_id and audit.after["classification_event"]

    repeat, repeat_statements = post(api, run_id="2")
    assert repeat.status_code == 201 and repeat_statements == 2  # token; the rows with the occurrence
    assert repeat.json()["id"] == failure.id and repeat.json()["occurrences"] == 2
    assert FailureOccurrence.objects.filter(failure=failure).count() == 2

    before = row_counts()
    duplicate, duplicate_statements = post(api, run_id="2")
    assert duplicate.status_code == 200 and duplicate_statements == 3  # token; nothing stored; the first answer
    assert row_counts() == before

    recovered, success_statements = post(api, run_id="3", status="success")
    # token; nothing stored, the open failures read; the rows with their resolution
    assert recovered.status_code == 201 and success_statements == 3
    assert recovered.json()["recovered"] == [failure.id]
    assert TimelineEntry.objects.filter(failure=failure, kind="resolved").count() == 1
    assert AuditEntry.objects.filter(object_id=str(failure.id), action="update", after__status="resolved").exists()

    passed, pass_statements = post(api, run_id="4", status="success")
    assert passed.status_code == 201 and pass_statements == 2  # token; the rows, nothing open
    assert passed.json()["recovered"] == []
    assert row_counts()["CIEvent"] == rows["CIEvent"] + 4


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in (CIEvent, CIJob, CIRun, Failure, AuditEntry)}


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


def prepared_plan(pattern: str) -> str:
    """The generic plan of this connection's prepared statement whose text is LIKE ``pattern``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", [pattern])
        ((statement,),) = cursor.fetchall()  # exactly one
    arguments = ", ".join(["NULL"] * len(set(re.findall(r"\$\d+", statement))))
    return generic_plan(statement, arguments)


def test_a_failing_event_finds_the_open_failure_by_its_index_in_a_generic_plan(api):
    post(api, run_id="1")
    repeat, _ = post(api, run_id="2")
    assert repeat.json()["occurrences"] == 2
    plan = prepared_plan("WITH open_failure AS (SELECT id FROM%")
    assert "one_open_failure_per_fingerprint" in plan, plan


def job_lookup_plan(pattern: str, arguments: str) -> str:
    """The generic plan of the prepared statement whose text is LIKE ``pattern``, with the indexes on the
    repository alone dropped (rolled back with the test): they may serve too, and without them only the
    partial index on open jobs can."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", [pattern])
        (statement,) = cursor.fetchone()
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'escalation_failure'"
            " AND indexdef LIKE '%%(repository_id)%%'"
        )
        for (index,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{index}"')
    return generic_plan(statement, arguments)


def test_a_recovery_locks_its_failures_by_their_key_in_a_generic_plan(api):
    post(api, run_id="1")
    recovered, _ = post(api, run_id="2", status="success")
    assert len(recovered.json()["recovered"]) == 1
    plan = prepared_plan("WITH locked AS%")
    assert "escalation_failure_pkey" in plan, plan


def test_a_pass_looks_for_its_jobs_open_failures_by_their_index_in_a_generic_plan(api):
    """The statement every pass runs (nothing open: store the event) finds open failures as the recovery does."""
    post(api, run_id="1", status="success")
    plan = job_lookup_plan('WITH open_failure AS (SELECT "id"%', "1, 'main', 'job', 1, 'key', '{}', '{}', '{}'")
    assert "failure_open_job_idx" in plan, plan
