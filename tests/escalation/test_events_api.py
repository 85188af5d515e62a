import pytest

from escalation.models import Failure
from tests.factories import EVENT

pytestmark = pytest.mark.django_db


def post(api, body):
    return api.post("/api/v1/events/", body, content_type="application/json")


def test_a_failure_event_opens_a_failure_with_owner_and_due_time(api):
    response = post(api, EVENT)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["type"] == "unit_test"
    assert body["status"] == "open"
    assert body["sla_due_at"] is not None
    failure = Failure.objects.get(pk=body["id"])
    assert failure.matrix_snapshot["sla_budget"] == 4 * 3600
    assert failure.timeline.get().kind == "opened"


def test_every_issued_token_authenticates_whatever_characters_its_secret_has(db):
    from django.utils import timezone

    from escalation.services.sources import source_authenticate, source_create
    from portal.audit import Actor

    for n in range(40):  # token_urlsafe secrets contain "_" and "-" often enough to show up in 40 tries
        source, token = source_create(name=f"ci-{n}", actor=Actor.task("test"), now=timezone.now())
        assert source_authenticate(token) == source
        assert source_authenticate(token + "x") is None
