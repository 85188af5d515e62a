"""A recovery reads its job's open failures in one statement and resolves them in the next, without a
transaction between them: a failure that changes in between is read again, never resolved from a stale state."""

import pytest
from django.utils import timezone

from escalation.choices import FailureStatus
from escalation.models import Failure
from escalation.services import ingestion
from escalation.services.failures import failures_acknowledge
from portal.audit import Actor
from portal.models import AuditEntry
from tests.factories import EVENT, report_failure

# As in production: no transaction around the request, each statement its own.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_a_failure_acknowledged_between_the_read_and_the_resolution_is_read_again(api, monkeypatch):
    failure = report_failure(api)
    reads = []

    def read_then_acknowledge(*args):
        found = read(*args)
        reads.append([f.status for f, _ in found])
        if len(reads) == 1:  # someone acknowledges it before the success's second statement
            failures_acknowledge(failure_ids=[failure.pk], actor=Actor.task("test"), now=timezone.now())
        return found

    read = ingestion._store_if_nothing_open
    monkeypatch.setattr(ingestion, "_store_if_nothing_open", read_then_acknowledge)
    response = post_success(api, failure)

    assert response.status_code == 201, response.content
    assert response.json()["recovered"] == [failure.pk]
    assert reads == [[FailureStatus.OPEN], [FailureStatus.ACKNOWLEDGED]]
    failure.refresh_from_db()
    assert failure.status == FailureStatus.RESOLVED and failure.acknowledged_at is not None
    assert failure.timeline.filter(kind="resolved").count() == 1
    resolution = AuditEntry.objects.get(object_id=str(failure.pk), action="update", after__status="resolved")
    assert resolution.before["status"] == "acknowledged"  # the state it had when it was resolved


def test_a_success_whose_failures_stay_unchanged_resolves_them_with_one_read(api, monkeypatch):
    failure = report_failure(api)
    reads = []
    read = ingestion._store_if_nothing_open
    monkeypatch.setattr(ingestion, "_store_if_nothing_open", lambda *args: reads.append(1) or read(*args))
    response = post_success(api, failure)
    assert response.json()["recovered"] == [failure.pk] and reads == [1]
    assert Failure.objects.get(pk=failure.pk).status == FailureStatus.RESOLVED


def post_success(api, failure: Failure):
    """The failing job of ``failure`` passing, in a new run."""
    body = {**EVENT, "repository": failure.repository.name, "branch": failure.branch, "job": failure.job_name}
    body.update(run_id="recovered", status="success")
    return api.post("/api/v1/events/", body, content_type="application/json")
