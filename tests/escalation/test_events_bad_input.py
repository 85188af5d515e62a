"""Bad input to POST /api/v1/events/: a 4xx that names the problem, and nothing stored."""

import json

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from escalation.api.serializers import EventInputSerializer
from escalation.choices import Scope
from escalation.models import CIEvent, CIJob, CIRun, Failure, IngestSource, Repository
from escalation.services.sources import source_create
from portal.audit import Actor
from portal.models import AuditEntry
from tests.factories import EVENT

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"


REQUIRED = ["source", "repository", "branch", "commit", "run_id", "job", "status"]

STORED = (CIEvent, CIRun, CIJob, Failure, Repository, AuditEntry)


def stored_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in STORED}


@pytest.fixture
def nothing_stored(db):
    """Snapshot the row counts; the test body asserts `nothing_stored()` after its request."""
    before = stored_counts()

    def check() -> bool:
        assert stored_counts() == before
        return True

    return check


def post_raw(client: Client, body: bytes | str, content_type: str = "application/json"):
    return client.generic("POST", URL, body, content_type=content_type)


def post_json(client: Client, body):
    return post_raw(client, json.dumps(body))


def assert_error(response, status: int, code: str, *named: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    for text in named:
        assert text in body["detail"], body
    return body


def test_malformed_json_is_refused_as_malformed(api, nothing_stored):
    response = post_raw(api, '{"source": "github-actions", "repository": ')
    assert_error(response, 400, "malformed_json", "malformed JSON")
    assert nothing_stored()


@pytest.mark.parametrize("body", [[EVENT], "an event", 42, True], ids=["array", "string", "number", "bool"])
def test_a_body_that_is_not_a_json_object_is_refused(api, nothing_stored, body):
    response = post_json(api, body)
    assert_error(response, 400, "invalid", "JSON object")
    assert nothing_stored()


def test_a_json_null_body_is_refused(api, nothing_stored):
    response = post_raw(api, "null")
    assert_error(response, 400, "invalid", "No data provided")
    assert nothing_stored()


def test_an_empty_body_is_refused_naming_the_required_fields(api, nothing_stored):
    response = post_raw(api, b"")
    payload = assert_error(response, 400, "invalid", "required")
    assert set(REQUIRED) <= set(payload["fields"])
    assert nothing_stored()


@pytest.mark.parametrize("field", REQUIRED)
def test_each_missing_required_field_is_named(api, nothing_stored, field):
    body = {k: v for k, v in EVENT.items() if k != field}
    response = post_json(api, body)
    payload = assert_error(response, 400, "invalid", field, "required")
    assert field in payload["fields"]
    assert nothing_stored()


WRONG_FIELDS = [
    ("attempt", "2", "must be an integer"),
    ("attempt", True, "must be an integer"),
    ("attempt", 1.5, "must be an integer"),
    ("attempt", 0, "greater than or equal to 1"),
    ("attempt", 2**40, "less than or equal to"),
    ("job", 5, "must be a string"),
    ("repository", ["acme/shop"], "must be a string"),
    ("changed_files", "a.py", "list"),
    ("changed_files", ["a.py", 3], "must be a string"),
    ("finished_at", "yesterday", "Datetime has wrong format"),
    ("started_at", 1700000000, "Datetime has wrong format"),
    ("url", "not a url", "valid URL"),
    ("repository", None, "may not be null"),
    ("repository", "", "may not be blank"),
    ("job", "j" * 256, "no more than 255 characters"),
    ("type", "t" * 33, "no more than 32 characters"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), WRONG_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v, _ in WRONG_FIELDS]
)
def test_a_wrongly_typed_or_shaped_field_is_named(api, nothing_stored, field, value, message):
    response = post_json(api, {**EVENT, field: value})
    payload = assert_error(response, 400, "invalid", f"{field}:", message)
    assert field in payload["fields"]
    assert nothing_stored()


def test_an_unknown_status_is_named(api, nothing_stored):
    response = post_json(api, {**EVENT, "status": "exploded"})
    assert_error(response, 400, "invalid", "status:", "exploded", "not a valid choice")
    assert nothing_stored()


def test_an_unknown_field_is_refused_rather_than_silently_dropped(api, nothing_stored):
    response = post_json(api, {**EVENT, "comit_author": "typo@example.com"})
    payload = assert_error(response, 400, "invalid", "comit_author", "unknown field")
    assert payload["fields"] == {"comit_author": ["unknown field"]}
    assert nothing_stored()


def test_a_body_over_the_limit_answers_413(api, nothing_stored):
    limit = settings.PORTAL_MAX_EVENT_BYTES
    assert limit == 1024 * 1024
    body = json.dumps({**EVENT, "log_excerpt": "x" * limit})
    assert len(body.encode()) > limit
    response = post_raw(api, body)
    assert_error(response, 413, "payload_too_large", str(limit))
    assert nothing_stored()


def test_a_body_at_the_limit_is_not_refused_for_its_size(api):
    padding = settings.PORTAL_MAX_EVENT_BYTES - len(json.dumps({**EVENT, "log_excerpt": ""}).encode())
    body = json.dumps({**EVENT, "log_excerpt": "x" * padding})
    assert len(body.encode()) == settings.PORTAL_MAX_EVENT_BYTES
    response = post_raw(api, body)
    assert response.status_code == 201, response.content


def test_a_raw_nul_byte_in_the_body_is_refused(api, nothing_stored):
    body = json.dumps(EVENT).encode().replace(b"unit-tests", b"unit\x00tests")
    response = post_raw(api, body)
    assert_error(response, 400, "nul_byte", "NUL")
    assert nothing_stored()


@pytest.mark.parametrize(
    "body",
    [
        {**EVENT, "log_excerpt": "before\u0000after"},
        {**EVENT, "changed_files": ["ok.py", "bad\u0000.py"]},
        {**EVENT, "key\u0000": "x"},
    ],
    ids=["string value", "list item", "key"],
)
def test_an_escaped_nul_character_inside_the_json_is_refused(api, nothing_stored, body):
    raw = json.dumps(body)
    assert "\\u0000" in raw and "\x00" not in raw
    response = post_raw(api, raw)
    assert_error(response, 400, "nul_byte", "NUL", "\\u0000")
    assert nothing_stored()


def test_a_body_that_is_not_utf8_is_refused(api, nothing_stored):
    body = json.dumps(EVENT).encode().replace(b"dev@example.com", "d\u00e9v@example.com".encode("latin-1"))
    response = post_raw(api, body)
    assert_error(response, 400, "malformed_json", "not UTF-8")
    assert nothing_stored()


def test_deeply_nested_json_is_refused_not_a_server_error(api, nothing_stored):
    depth = 100_000
    body = '{"source": ' + "[" * depth + "]" * depth + "}"
    assert len(body) < settings.PORTAL_MAX_EVENT_BYTES
    response = post_raw(api, body)
    assert_error(response, 400, "malformed_json", "nested")
    assert nothing_stored()


def test_deep_nesting_the_json_parser_accepts_is_refused_by_field_not_a_server_error(api, nothing_stored):
    depth = 500  # json.loads takes this; a recursive walk over it must not overflow either
    body = json.dumps({**EVENT, "changed_files": []}).replace("[]", "[" * depth + "]" * depth)
    response = post_raw(api, body)
    payload = assert_error(response, 400, "invalid", "changed_files:", "must be a string")
    assert list(payload["fields"]) == ["changed_files"]
    assert nothing_stored()


def test_a_request_without_a_token_answers_401(db, nothing_stored):
    response = post_json(Client(), EVENT)
    assert_error(response, 401, "not_authenticated", "credentials were not provided")
    assert response["WWW-Authenticate"] == "Bearer"
    assert nothing_stored()


@pytest.mark.parametrize(
    "header", ["Token abc", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "bearer-token"], ids=repr
)
def test_a_malformed_authorization_header_answers_401(ingest_token, nothing_stored, header):
    response = post_json(Client(headers={"authorization": header}), EVENT)
    assert_error(response, 401, "authentication_failed", "Bearer <token>")
    assert nothing_stored()


@pytest.mark.parametrize(
    "token", ["cip_deadbeef_not-the-secret", "not-a-portal-token", "cip_x"], ids=["unknown", "foreign", "short"]
)
def test_a_wrong_token_answers_401(ingest_token, nothing_stored, token):
    response = post_json(Client(headers={"authorization": f"Bearer {token}"}), EVENT)
    assert_error(response, 401, "authentication_failed", "unknown or revoked")
    assert nothing_stored()


def test_a_token_with_the_right_prefix_but_a_wrong_secret_answers_401(ingest_token, nothing_stored):
    prefix = ingest_token.rsplit("_", 1)[0]
    response = post_json(Client(headers={"authorization": f"Bearer {prefix}_forged"}), EVENT)
    assert_error(response, 401, "authentication_failed", "unknown or revoked")
    assert nothing_stored()


def test_a_revoked_token_answers_401(api, ingest_token, nothing_stored):
    IngestSource.objects.update(is_active=False)
    response = post_json(api, EVENT)
    assert_error(response, 401, "authentication_failed", "unknown or revoked")
    assert nothing_stored()


def test_a_token_without_the_ingest_scope_answers_403_naming_the_scope(db):
    _, token = source_create(
        name="reader", scopes=[Scope.READ, Scope.REQUEST], actor=Actor.task("test"), now=timezone.now()
    )
    before = stored_counts()
    response = post_json(Client(headers={"authorization": f"Bearer {token}"}), EVENT)
    assert_error(response, 403, "permission_denied", "'ingest'")
    assert stored_counts() == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_body_of_the_wrong_content_type_answers_415(api, nothing_stored, content_type):
    response = post_raw(api, json.dumps(EVENT), content_type=content_type)
    assert_error(response, 415, "unsupported_media_type", content_type)
    assert nothing_stored()


def test_get_on_the_events_endpoint_answers_405(api, nothing_stored):
    response = api.get(URL)
    body = assert_error(response, 405, "method_not_allowed", "GET")
    assert "POST" in response["Allow"]
    assert body["detail"]
    assert nothing_stored()


@pytest.mark.parametrize("field", ["job", "log_excerpt"])
def test_a_lone_surrogate_that_reaches_a_text_field_is_refused_with_drfs_message(field):
    """The body parser refuses or replaces undecodable text first; the field still refuses a lone surrogate
    that another parser lets through, with DRF's own message."""
    serializer = EventInputSerializer(data={**EVENT, field: "before \ud800 after"})
    assert not serializer.is_valid()
    assert serializer.errors[field] == ["Surrogate characters are not allowed: U+D800."]
    assert serializer.errors[field][0].code == "surrogate_characters_not_allowed"
