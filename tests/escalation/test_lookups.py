"""``__in_array``: the same rows as ``__in``, with one array parameter on PostgreSQL."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escalation.models import Escalation, Failure
from tests.factories import report_failure

pytestmark = pytest.mark.django_db


def test_in_array_finds_what_in_finds_with_one_parameter(api):
    ids = [report_failure(api, job=f"job-{n}").pk for n in range(5)]
    wanted = [ids[0], ids[3], 10**9]
    with CaptureQueriesContext(connection) as queries:
        found = set(Failure.objects.filter(pk__in_array=wanted).values_list("pk", flat=True))
    assert found == set(Failure.objects.filter(pk__in=wanted).values_list("pk", flat=True)) == {ids[0], ids[3]}
    assert "= ANY(" in queries[0]["sql"]
    assert set(Failure.objects.exclude(pk__in_array=wanted).values_list("pk", flat=True)) == set(ids) - found
    assert not Failure.objects.filter(pk__in_array=[]).exists()
    names = [f"job-{n}" for n in (1, 2)]
    assert Failure.objects.filter(job_name__in_array=names).count() == 2


def test_in_array_works_across_a_relation(api):
    failure = report_failure(api)
    Escalation.objects.create(failure=failure, step="opened", due_at=failure.first_seen_at, at=failure.first_seen_at)
    assert Escalation.objects.filter(failure__in_array=[failure.pk]).count() == 1
    assert Escalation.objects.filter(failure_id__in_array=[failure.pk + 1]).count() == 0
