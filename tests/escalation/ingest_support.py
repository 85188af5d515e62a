"""Helpers of the webhook and report tests: real fixtures, signed deliveries, uploads, row counts."""

import hashlib
import hmac
import json
import uuid
from pathlib import Path
from urllib.parse import urlencode

from django.test import Client

from escalation.models import (
    CIEvent,
    CIJob,
    CIRun,
    CredentialRotation,
    Failure,
    FailureOccurrence,
    Finding,
    FlakyObservation,
    Report,
    Repository,
    RunFlag,
    TestResult,
    TimelineEntry,
    WebhookAlias,
    WebhookDelivery,
    WebhookRun,
)
from portal.models import AuditEntry

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WEBHOOK_SECRET = "s3cr3t-for-the-webhook-tests"  # noqa: S105 - a test value

TARGET = {"repository": "acme/shop", "branch": "main", "commit": "9f1c2e7", "run_id": "4711", "job": "unit-tests"}

STORED = (
    CIEvent,
    CIRun,
    CIJob,
    Failure,
    FailureOccurrence,
    TimelineEntry,
    AuditEntry,
    Repository,
    Report,
    TestResult,
    Finding,
    CredentialRotation,
    FlakyObservation,
    RunFlag,
    WebhookDelivery,
    WebhookRun,
    WebhookAlias,
)


def fixture(category: str, name: str) -> bytes:
    return (FIXTURES / category / name).read_bytes()


def fixture_json(category: str, name: str):
    return json.loads(fixture(category, name))


def fixtures_of(category: str) -> list[str]:
    return sorted(p.name for p in (FIXTURES / category).iterdir() if p.name != "SOURCES.tsv")


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in STORED}


def upload(client: Client, kind: str, body: bytes, content_type: str = "application/octet-stream", **params):
    query = urlencode({**TARGET, **params})
    return client.generic("POST", f"/api/v1/reports/{kind}/?{query}", body, content_type=content_type)


def github_post(
    client: Client, source: str, event: str, payload, *, delivery: str | None = None, secret=WEBHOOK_SECRET
):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
    }
    return client.generic(
        "POST", f"/api/v1/webhooks/github/{source}/", body, content_type="application/json", headers=headers
    )


def gitlab_post(
    client: Client, source: str, payload, *, event: str = "", delivery: str | None = "", token=WEBHOOK_SECRET
):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    kind = payload.get("object_kind") if isinstance(payload, dict) else ""
    headers = {
        "X-Gitlab-Token": token,
        "X-Gitlab-Event": event or {"pipeline": "Pipeline Hook", "build": "Job Hook"}.get(kind, "Push Hook"),
    }
    if delivery is None:
        headers["X-Gitlab-Event-UUID"] = str(uuid.uuid4())
    elif delivery:
        headers["X-Gitlab-Event-UUID"] = delivery
    return client.generic(
        "POST", f"/api/v1/webhooks/gitlab/{source}/", body, content_type="application/json", headers=headers
    )


def ok(response, status: int = 201) -> dict:
    assert response.status_code == status, response.content
    return response.json()


def error(response, status: int, code: str, *named: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code, body
    for text in named:
        assert text in body["detail"], body
    return body
