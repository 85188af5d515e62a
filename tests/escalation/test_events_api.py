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


def test_the_receipt_is_what_its_schema_serializer_writes_for_every_kind_of_answer(db):
    """The view builds the receipt as plain values (escalation.api.views.event_receipt); the JSON must be
    byte for byte what EventReceiptSerializer, the documented schema, would have written."""
    from django.utils import timezone
    from rest_framework.renderers import JSONRenderer

    from escalation.api.serializers import EventReceiptSerializer
    from escalation.api.views import event_receipt
    from escalation.services.ingestion import EventInput, event_ingest
    from escalation.services.sources import source_create
    from portal.audit import Actor

    source, _ = source_create(name="receipts", actor=Actor.task("test"), now=timezone.now())
    deliveries = [
        EVENT,  # opens
        {**EVENT, "run_id": "1002", "type": "not-a-type"},  # recurs, with a warning about the hint
        {**EVENT, "run_id": "1002", "type": "not-a-type"},  # a duplicate
        {**EVENT, "run_id": "1003", "status": "success"},  # recovers
        {**EVENT, "run_id": "1004", "status": "success"},  # passes, nothing open
    ]
    render = JSONRenderer().render
    answers = []
    for body in deliveries:
        data = EventInput(**body)
        result = event_ingest(ingest_source=source, data=data, now=timezone.now())
        receipt = event_receipt(result, data)
        assert render(receipt) == render(EventReceiptSerializer(receipt).data)
        answers.append(receipt)
    assert [a["duplicate"] for a in answers] == [False, False, True, False, False]
    assert answers[1]["occurrences"] == 2 and answers[1]["warnings"]
    assert answers[0]["sla_due_at"] is not None and answers[3]["recovered"] == [answers[0]["id"]]
    assert answers[4]["id"] is None and answers[4]["recovered"] == []
