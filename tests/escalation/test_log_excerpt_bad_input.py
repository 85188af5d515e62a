"""Log excerpts as CI sends them: over the limit they are cut to their tail, not refused; text that is not
UTF-8 is decoded with replacement, not refused; the rest of an event stays strict."""

import json

import pytest
from django.conf import settings

from escalation.models import CIEvent, Failure
from escalation.services.log_text import log_excerpt_clip, log_text_decode
from tests.factories import event_body

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"
ERROR_LINE = 'psycopg.OperationalError: connection to server at "db", port 5432 failed: Connection refused'


def post_raw(api, body: bytes):
    return api.generic("POST", URL, body, content_type="application/json")


def test_an_excerpt_over_64_kib_is_cut_to_its_last_64_kib_and_the_error_at_its_end_still_classifies(api):
    assert settings.PORTAL_LOG_EXCERPT_LIMIT == 64 * 1024
    log = "early setup €\n" + "progress ██████ 50 %\n" * 12_000 + ERROR_LINE  # 3-byte characters: ~400 KiB
    response = api.post(URL, event_body(job="db-migrate", log_excerpt=log), content_type="application/json")

    assert response.status_code == 201, response.content
    stored = CIEvent.objects.get().log_excerpt
    assert len(stored.encode()) <= 64 * 1024 and len(stored.encode()) > 64 * 1024 - 4
    assert log.endswith(stored) and stored.endswith(ERROR_LINE)
    assert "early setup" not in stored
    failure = Failure.objects.get(pk=response.json()["id"])
    assert (failure.failure_type, failure.classification_text) == ("database_connectivity", ERROR_LINE)


def test_the_cut_never_splits_a_character():
    text = "é" * 40_000  # 2 bytes each
    clipped = log_excerpt_clip(text, limit=1001)
    assert clipped == "é" * 500
    assert log_excerpt_clip("short", limit=1001) == "short"


def test_latin1_bytes_in_the_log_excerpt_are_replaced_and_the_event_is_accepted(api):
    body = json.dumps(
        event_body(job="compile", log_excerpt="Fehler: Datei nicht gefunden: XYZ\nerror TS2304: x")
    ).encode()
    body = body.replace(b"XYZ", "caf\u00e9.ts".encode("latin-1"))  # 0xE9 alone is not UTF-8

    response = post_raw(api, body)

    assert response.status_code == 201, response.content
    stored = CIEvent.objects.get().log_excerpt
    assert "caf\ufffd.ts" in stored
    assert Failure.objects.get().failure_type == "build_error"


def test_a_lone_surrogate_escape_in_the_log_excerpt_is_replaced_not_a_server_error(api):
    body = json.dumps(event_body(log_excerpt="before \ud800 after"))
    assert "\\ud800" in body

    response = post_raw(api, body.encode())

    assert response.status_code == 201, response.content
    assert CIEvent.objects.get().log_excerpt.startswith("before \ufffd")


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(event_body(job="unit \ud800 tests")).encode(),
        json.dumps(event_body(job="unit-XY-tests")).encode().replace(b"XY", b"\xff\xfe"),
    ],
    ids=["surrogate escape", "invalid bytes"],
)
def test_undecodable_text_outside_the_log_excerpt_is_still_refused_naming_the_field(api, body):
    response = post_raw(api, body)

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "malformed_json"
    assert "not UTF-8" in response.json()["detail"] and "'job'" in response.json()["detail"]
    assert not CIEvent.objects.exists()


def test_the_decoder_turns_bytes_surrogates_and_nul_into_replacement_characters():
    assert log_text_decode(b"ok \xff\xfe ok") == "ok \ufffd\ufffd ok"
    assert log_text_decode("a\udcffb") == "a\ufffdb"
    assert log_text_decode("nul\x00here") == "nul\ufffdhere"
    assert log_text_decode("plain ✓") == "plain ✓"
