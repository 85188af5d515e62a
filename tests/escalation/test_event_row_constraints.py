"""The keys between the rows one CI event stores have no constraint in PostgreSQL (each is taken from a row
stored or locked in the same statement); Django still applies their on_delete, and the keys to rows people
edit keep their constraint."""

import pytest
from django.db import connection
from django.db.models import ProtectedError

from escalation.models import CIEvent, CIJob, CIRun, Failure, FailureOccurrence, IngestSource, TimelineEntry
from portal.models import AuditEntry
from tests.factories import report_failure

pytestmark = pytest.mark.django_db

UNCONSTRAINED = {
    (CIRun, "source"),
    (CIJob, "run"),
    (CIEvent, "source"),
    (CIEvent, "job"),
    (Failure, "latest_run"),
    (Failure, "classification_event"),
    (FailureOccurrence, "failure"),
    (FailureOccurrence, "event"),
    (TimelineEntry, "failure"),
    (AuditEntry, "content_type"),
}
CONSTRAINED = {(CIRun, "repository"), (Failure, "repository"), (Failure, "owner_team"), (Failure, "assignee")}

FOREIGN_KEYS = """
SELECT t.relname, a.attname
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f'
"""


def test_only_the_keys_to_rows_people_edit_keep_their_constraint():
    with connection.cursor() as cursor:
        cursor.execute(FOREIGN_KEYS)
        constrained = set(cursor.fetchall())

    def column(model, name):
        return (model._meta.db_table, model._meta.get_field(name).column)

    assert {column(m, n) for m, n in UNCONSTRAINED} & constrained == set()
    assert {column(m, n) for m, n in CONSTRAINED} <= constrained


def test_django_still_cascades_and_protects_through_the_unconstrained_keys(api):
    failure = report_failure(api)
    report_failure(api)  # a second occurrence, in another run
    assert FailureOccurrence.objects.filter(failure=failure).count() == 2
    failure.refresh_from_db()

    with pytest.raises(ProtectedError):  # the failure's latest run
        failure.latest_run.delete()
    with pytest.raises(ProtectedError):  # the source that reported events
        IngestSource.objects.get().delete()

    failure.delete()
    assert not FailureOccurrence.objects.exists()
    assert not TimelineEntry.objects.exists()
    assert CIEvent.objects.count() == 2  # the events stay: they are what CI reported

    CIRun.objects.all().delete()  # nothing protects them any more; their jobs and events go with them
    assert not CIJob.objects.exists()
    assert not CIEvent.objects.exists()
