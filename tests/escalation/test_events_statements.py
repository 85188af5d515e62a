"""Statements per event on PostgreSQL: the ingestion fast path (bench/ingest.py) stays a few statements each.

The ceilings count everything the request runs, the token lookup included; inside the test transaction
BEGIN and COMMIT are a savepoint and its release, and a rollback is two statements.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escalation.models import Failure, FailureOccurrence, TimelineEntry
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
