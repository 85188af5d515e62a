"""After every secret fixture is ingested, no secret value is anywhere: database, logs, API answers, admin."""

import base64
import binascii
import io
import json
import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from escalation.models import CIEvent, CredentialRotation, Failure, Finding, Report
from portal.models import AuditEntry
from tests.escalation.ingest_support import fixture, fixture_json, ok, upload

pytestmark = pytest.mark.django_db

UPLOADS = [
    ("secrets", "secret-scan", "gitleaks__json_simple.json"),
    ("secrets", "secret-scan", "DefectDojo__gitleaks8_many.json"),
    ("secrets", "secret-scan", "DefectDojo__trufflehog_v2_many_vulns.json"),
    ("secrets", "secret-scan", "DefectDojo__trufflehog_v3_git.json"),
    ("secrets", "secret-scan", "DefectDojo__detect_secrets_many_findings.json"),
    ("trivy", "secret-scan", "aquasecurity-trivy__secrets.json.golden"),
    ("sarif", "sarif", "gitleaks__sarif_simple.sarif"),
]


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


def secret_values() -> set[str]:
    """Every secret value the fixtures themselves carry, by each format's own keys."""
    values: set[str] = set()
    for item in fixture_json("secret-scan", "gitleaks__json_simple.json") + fixture_json(
        "secret-scan", "DefectDojo__gitleaks8_many.json"
    ):
        values |= {item["Secret"], item["Match"]}
    for line in fixture("secret-scan", "DefectDojo__trufflehog_v2_many_vulns.json").splitlines():
        if line.strip():
            values |= set(json.loads(line)["stringsFound"])
    for line in fixture("secret-scan", "DefectDojo__trufflehog_v3_git.json").splitlines():
        if line.strip():
            record = json.loads(line)
            for key in ("Raw", "RawV2"):
                if record.get(key):
                    values |= {record[key], _b64(record[key])}
            values.add(record["Redacted"])  # for an AWS key, trufflehog's "redacted" form is the key id itself
    for items in fixture_json("secret-scan", "DefectDojo__detect_secrets_many_findings.json")["results"].values():
        values |= {item["hashed_secret"] for item in items}
    for result in fixture_json("secret-scan", "aquasecurity-trivy__secrets.json.golden")["Results"]:
        for secret in result["Secrets"]:
            values.add(secret["Match"])
            values |= {line["Content"] for line in secret["Code"]["Lines"]}
    for run in fixture_json("sarif", "gitleaks__sarif_simple.sarif")["runs"]:
        for result in run["results"]:
            values |= {loc["physicalLocation"]["region"]["snippet"]["text"] for loc in result["locations"]}
    values = {v for v in values if v and len(v) >= 6 and v != "#!/bin/sh"}
    for value in list(values):  # multi-line keys: their lines are secrets too
        values |= {part for part in value.splitlines() if len(part) >= 16}
    return values


def leaks(text: str, values: set[str]) -> list[str]:
    found = []
    for value in values:
        if value in text or json.dumps(value)[1:-1] in text:
            found.append(value[:40])
    return found


@pytest.fixture
def admin_client():
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(user)
    return client


def test_no_secret_value_reaches_the_database_logs_api_answers_or_admin_pages(api, admin_client, caplog):
    values = secret_values()
    assert len(values) > 60  # the fixtures really carry secrets: the check below checks something
    caplog.set_level(logging.DEBUG)
    answers = []
    for kind, category, name in UPLOADS:
        answers.append(ok(upload(api, kind, fixture(category, name), repository=f"acme/{name[:20]}")).__repr__())
    assert Failure.objects.filter(failure_type="secret_detected").count() > 60

    failures = api.get("/api/v1/failures/?page_size=500")
    answers.append(failures.content.decode())
    for failure_id in Failure.objects.values_list("pk", flat=True):
        answers.append(api.get(f"/api/v1/failures/{failure_id}/").content.decode())

    pages = []
    for model in (Finding, Failure, CredentialRotation, CIEvent, Report, AuditEntry):
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        response = admin_client.get(changelist)
        assert response.status_code == 200, changelist
        pages.append(response.content.decode())
        for pk in model.objects.values_list("pk", flat=True)[:200]:
            page = admin_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[pk]))
            assert page.status_code == 200
            pages.append(page.content.decode())

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    logs = "\n".join(record.getMessage() for record in caplog.records) + caplog.text

    assert leaks(dump.getvalue(), values) == []
    assert leaks(logs, values) == []
    assert leaks("\n".join(answers), values) == []
    assert leaks("\n".join(pages), values) == []
    assert Finding.objects.filter(is_secret=True).exclude(location="").exists()  # where the secrets are, is kept
