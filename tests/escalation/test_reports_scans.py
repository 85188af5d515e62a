"""SARIF, Trivy and secret-scanner uploads: every real file, its findings counted from the file."""

import json
from collections import Counter

import pytest
from django.utils import timezone

from escalation.choices import FailureStatus, FailureType, Resolution, Role
from escalation.models import CredentialRotation, Failure, Finding, Report
from escalation.services.failures import failures_resolve
from escalation.services.reports.findings import severity_of_level, severity_of_score
from escalation.services.rotations import rotation_confirm
from portal.audit import Actor
from tests.escalation.ingest_support import error, fixture, fixture_json, fixtures_of, ok, row_counts, upload
from tests.factories import IdentityFactory, UserFactory

pytestmark = pytest.mark.django_db

VULN = {
    "critical": FailureType.VULNERABILITY_CRITICAL,
    "high": FailureType.VULNERABILITY_HIGH,
    "medium": FailureType.VULNERABILITY_MEDIUM,
}


def sarif_expectation(doc: dict) -> dict:
    """Results by severity, suppressed and opened, read straight from the SARIF document."""
    by_severity, suppressed, opened = Counter(), 0, 0
    for run in doc["runs"]:
        rules = {r["id"]: r for r in run["tool"]["driver"].get("rules", [])}
        secret_tool = "gitleaks" in run["tool"]["driver"]["name"].lower()
        for result in run.get("results", []):
            rule = rules.get(result.get("ruleId"), {})
            score = rule.get("properties", {}).get("security-severity")
            level = result.get("level") or rule.get("defaultConfiguration", {}).get("level", "warning")
            severity = severity_of_score(float(score)) if score else severity_of_level(level)
            if secret_tool:
                severity = "high"
            by_severity[severity] += 1
            if result.get("suppressions"):
                suppressed += 1
            elif secret_tool or severity in VULN:
                opened += 1
    return {"by_severity": by_severity, "suppressed": suppressed, "opened": opened}


@pytest.mark.parametrize(
    "name", [n for n in fixtures_of("sarif") if n not in ("github-codeql-action__invalid-sarif.sarif",)]
)
def test_each_real_sarif_file_is_stored_with_its_results_and_severities(api, name):
    doc = json.loads(fixture("sarif", name))
    want = sarif_expectation(doc)
    body = ok(upload(api, "sarif", fixture("sarif", name)))
    assert body["runs"] == len(doc["runs"])
    assert body["results"] == sum(len(run.get("results", [])) for run in doc["runs"])
    assert body["by_severity"] == {k: want["by_severity"].get(k, 0) for k in body["by_severity"]}
    assert Finding.objects.count() == body["results"]
    assert Finding.objects.filter(is_suppressed=True).count() == want["suppressed"]
    assert Failure.objects.count() == len(body["failures_opened"])
    assert Finding.objects.exclude(failure=None).count() == want["opened"]


def test_findings_become_failures_by_cvss_band_with_the_level_as_fallback():
    assert [severity_of_score(s) for s in (9.8, 9.0, 8.9, 7.0, 6.9, 4.0, 3.9)] == [
        "critical", "critical", "high", "high", "medium", "medium", "low"
    ]  # fmt: skip
    assert [severity_of_level(level) for level in ("error", "warning", "note", "none", "")] == [
        "high", "medium", "low", "none", "medium"
    ]  # fmt: skip


def test_trivys_sarif_findings_open_medium_vulnerabilities_by_security_severity(api):
    ok(upload(api, "sarif", fixture("sarif", "aquasecurity-trivy__alpine-310.sarif.golden")))
    assert set(Failure.objects.values_list("failure_type", flat=True)) == {FailureType.VULNERABILITY_MEDIUM}
    assert Failure.objects.count() == 4  # the same CVEs in two packages are four findings


def test_a_suppressed_result_is_recorded_not_opened(api):
    body = ok(upload(api, "sarif", fixture("sarif", "semgrep__test_sarif_output_include_nosemgrep.results.sarif")))
    assert {"reason": "suppressed", "count": 1} in body["skipped_items"]
    suppressed = Finding.objects.get(is_suppressed=True)
    assert suppressed.failure is None


def test_gitleaks_sarif_opens_secret_detected_with_a_rotation_task(api):
    ok(upload(api, "sarif", fixture("sarif", "gitleaks__sarif_simple.sarif")))
    failure = Failure.objects.get()
    assert failure.failure_type == FailureType.SECRET_DETECTED
    rotation = CredentialRotation.objects.get(failure=failure)
    assert rotation.committer == "johndoe@gmail.com"


def test_a_later_scan_by_the_same_tool_and_category_resolves_what_it_no_longer_finds(api):
    trivy = fixture_json("sarif", "aquasecurity-trivy__alpine-310.sarif.golden")
    ok(upload(api, "sarif", json.dumps(trivy).encode()))
    ok(upload(api, "sarif", fixture("sarif", "microsoft-sarif-tutorials__eslint-simple-example.sarif")))
    eslint = Failure.objects.get(findings__tool="ESLint")
    fixed = json.loads(json.dumps(trivy))
    fixed["runs"][0]["results"] = fixed["runs"][0]["results"][:1]  # three of four findings fixed
    body = ok(upload(api, "sarif", json.dumps(fixed).encode(), run_id="4712"))
    assert len(body["recovered"]) == 3
    still = Failure.objects.filter(status=FailureStatus.OPEN, findings__tool="Trivy").distinct()
    assert still.count() == 1
    assert Failure.objects.filter(resolution=Resolution.FIXED).count() == 3
    eslint.refresh_from_db()
    assert eslint.status == FailureStatus.OPEN  # another tool's finding is untouched


def test_a_scan_in_another_category_leaves_the_first_categorys_findings_open(api):
    ok(upload(api, "sarif", fixture("sarif", "aquasecurity-trivy__alpine-310.sarif.golden"), category="image-a"))
    empty = fixture_json("sarif", "aquasecurity-trivy__alpine-310.sarif.golden")
    empty["runs"][0]["results"] = []
    ok(upload(api, "sarif", json.dumps(empty).encode(), category="image-b"))
    assert Failure.objects.filter(status=FailureStatus.OPEN).count() == 4
    ok(upload(api, "sarif", json.dumps(empty).encode(), category="image-a", run_id="4713"))
    assert Failure.objects.filter(status=FailureStatus.OPEN).count() == 0


def test_runs_empty_answers_201_with_zero_results(api):
    body = ok(upload(api, "sarif", fixture("sarif", "DefectDojo__sarif_no_runs.sarif")))
    assert (body["runs"], body["results"]) == (0, 0)


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        (b'{"version": "2.1.0", "$schema": "x"}', "malformed_report", "runs"),
        (fixture("sarif", "github-codeql-action__invalid-sarif.sarif"), "malformed_report", "runs[0].results"),
        (fixture("junit", "dorny-test-reporter__jest-junit.xml"), "wrong_format", "JSON object"),
        (b'{"runs": [', "malformed_report", "malformed JSON"),
        (b'{"version": "2.0.0", "runs": []}', "wrong_format", "2.0.0"),
    ],
    ids=["no-runs", "results-not-array", "xml", "truncated", "old-version"],
)
def test_a_malformed_sarif_answers_400_and_stores_nothing(api, body, code, named):
    counts = row_counts()
    error(upload(api, "sarif", body), 400, code, named)
    assert row_counts() == counts


def test_trivy_json_vulnerabilities_open_failures_by_cvss(api):
    doc = fixture_json("trivy", "aquasecurity-trivy__alpine-310.json.golden.trimmed")
    vulns = [v for r in doc["Results"] for v in r.get("Vulnerabilities", [])]
    body = ok(upload(api, "trivy", fixture("trivy", "aquasecurity-trivy__alpine-310.json.golden.trimmed")))
    assert body["results"] == len(vulns)
    assert body["artifact"] == doc["ArtifactName"]
    bands = Counter(severity_of_score(v["CVSS"]["nvd"]["V3Score"]) for v in vulns)
    assert body["by_severity"] == {k: bands.get(k, 0) for k in body["by_severity"]}
    assert Failure.objects.count() == len({(v["PkgName"], v["VulnerabilityID"]) for v in vulns})


def test_trivy_json_secrets_open_secret_detected(api):
    doc = fixture_json("secret-scan", "aquasecurity-trivy__secrets.json.golden")
    secrets = [s for r in doc["Results"] for s in r.get("Secrets", [])]
    body = ok(upload(api, "trivy", fixture("secret-scan", "aquasecurity-trivy__secrets.json.golden")))
    assert body["results"] == len(secrets)
    assert Failure.objects.filter(failure_type=FailureType.SECRET_DETECTED).count() == len(secrets)
    assert sorted(Finding.objects.values_list("line", flat=True)) == sorted(s["StartLine"] for s in secrets)
    assert CredentialRotation.objects.count() == len(secrets)


@pytest.mark.parametrize(
    ("body", "code"),
    [(fixture("sarif", "gitleaks__sarif_simple.sarif"), "wrong_format"), (b'{"SchemaVersion": 1}', "wrong_format"),
     (b"[]", "wrong_format")],
    ids=["sarif", "schema-1", "array"],
)  # fmt: skip
def test_a_report_of_the_wrong_format_on_the_trivy_endpoint_answers_400(api, body, code):
    counts = row_counts()
    error(upload(api, "trivy", body), 400, code)
    assert row_counts() == counts


def secret_count(name: str) -> dict:
    """Findings and distinct secrets of a secret-scanner file, read straight from it."""
    raw = fixture("secret-scan", name)
    if name.startswith("DefectDojo__trufflehog"):
        rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if "SourceMetadata" in rows[0]:
            keys = {(r["DetectorName"], json.dumps(r["SourceMetadata"], sort_keys=True)) for r in rows}
        else:
            keys = {(r["reason"], r["path"], r["commitHash"], r["branch"]) for r in rows}
        return {"results": len(rows), "opened": len(keys), "format": "trufflehog"}
    doc = json.loads(raw)
    if isinstance(doc, list):
        return {"results": len(doc), "opened": len(doc), "format": "gitleaks"}
    items = [item for items in doc["results"].values() for item in items]
    return {
        "results": len(items), "opened": len([i for i in items if i.get("is_secret") is not False]),
        "format": "detect-secrets",
    }  # fmt: skip


SECRET_FILES = [n for n in fixtures_of("secret-scan") if "trivy" not in n]


@pytest.mark.parametrize("name", SECRET_FILES)
@pytest.mark.parametrize("named", [True, False], ids=["format-named", "format-detected"])
def test_each_real_secret_report_opens_secret_detected_with_rotation_tasks(api, name, named):
    want = secret_count(name)
    params = {"format": want["format"]} if named else {}
    body = ok(upload(api, "secrets", fixture("secret-scan", name), **params))
    assert body["format"] == want["format"]
    assert body["results"] == want["results"]
    failures = Failure.objects.all()
    assert failures.count() == want["opened"]
    assert set(failures.values_list("failure_type", flat=True)) == {FailureType.SECRET_DETECTED}
    assert CredentialRotation.objects.count() == want["opened"]


def test_a_gitleaks_finding_keeps_file_line_rule_commit_and_committer(api):
    item = fixture_json("secret-scan", "gitleaks__json_simple.json")[0]
    ok(upload(api, "secrets", fixture("secret-scan", "gitleaks__json_simple.json")))
    finding = Finding.objects.get()
    assert (finding.location, finding.line, finding.rule_id) == (item["File"], item["StartLine"], item["RuleID"])
    assert (finding.commit_sha, finding.committer) == (item["Commit"], item["Email"])


def test_gitleaks_v7_keys_are_read_too(api):
    v8 = fixture_json("secret-scan", "DefectDojo__gitleaks8_many.json")
    v7 = [{"line": f["Match"], "lineNumber": f["StartLine"], "offender": f["Secret"], "commit": f["Commit"],
           "rule": f["RuleID"], "file": f["File"], "email": f["Email"], "author": f["Author"], "tags": ""}
          for f in v8]  # fmt: skip
    body = ok(upload(api, "secrets", json.dumps(v7).encode()))
    assert body["results"] == len(v8)
    assert sorted(Finding.objects.values_list("rule_id", flat=True)) == sorted(f["RuleID"] for f in v8)


def test_the_rotation_task_is_assigned_to_the_committer_and_security_at_once(api):
    item = fixture_json("secret-scan", "gitleaks__json_simple.json")[0]
    identity = IdentityFactory(value=item["Email"])
    ok(upload(api, "secrets", fixture("secret-scan", "gitleaks__json_simple.json")))
    rotation = CredentialRotation.objects.get()
    assert rotation.assignee == identity.person
    assert rotation.assignee_team == identity.person.team
    assert rotation.security_team is not None
    assert rotation.security_team.name == "Security"
    assert rotation.failure.secondary_team == identity.person.team  # the original committer's team


def test_a_secret_resolves_only_when_its_rotation_is_confirmed_never_by_a_later_clean_scan(api, security_specialist):
    ok(upload(api, "secrets", fixture("secret-scan", "gitleaks__json_simple.json")))
    ok(upload(api, "secrets", b"[]", run_id="4712"))  # a clean scan
    failure = Failure.objects.get()
    assert failure.status == FailureStatus.OPEN
    actor = Actor.of_user(security_specialist, "admin")
    assert failures_resolve(failure_ids=[failure.pk], resolution=Resolution.FIXED, actor=actor, now=timezone.now()) == 0
    rotation = CredentialRotation.objects.get()
    rotation_confirm(rotation_id=rotation.pk, actor=actor, now=timezone.now(), note="key revoked")
    failure.refresh_from_db()
    assert (failure.status, failure.resolution) == (FailureStatus.RESOLVED, Resolution.FIXED)


def test_a_role_without_resolve_permission_cannot_confirm_a_rotation(api):
    ok(upload(api, "secrets", fixture("secret-scan", "gitleaks__json_simple.json")))
    product_owner = UserFactory(username="po", roles=[Role.PRODUCT_OWNER])
    with pytest.raises(Exception, match="lacks the permission"):
        rotation_confirm(
            rotation_id=CredentialRotation.objects.get().pk, actor=Actor.of_user(product_owner, "admin"),
            now=timezone.now(),
        )  # fmt: skip
    assert Failure.objects.get().status == FailureStatus.OPEN


@pytest.mark.parametrize(
    ("body", "params", "code", "named"),
    [
        (b'{"SourceMetadata": {}}\nnot json at all\n', {"format": "trufflehog"}, "malformed_report", "line 2"),
        (fixture("sarif", "gitleaks__sarif_simple.sarif"), {}, "wrong_format", "SARIF"),
        (fixture("junit", "dorny-test-reporter__jest-junit.xml"), {}, "wrong_format", "secret-scanner"),
        (fixture("secret-scan", "DefectDojo__trufflehog_v3_git.json"), {"format": "gitleaks"}, "wrong_format", "array"),
        (b'[{"x": 1}]', {"format": "gitleaks"}, "wrong_format", "gitleaks finding"),
    ],
    ids=["non-json-line", "sarif", "xml", "wrong-named-format", "not-gitleaks"],
)
def test_a_bad_secret_report_answers_400_and_stores_nothing(api, body, params, code, named):
    counts = row_counts()
    error(upload(api, "secrets", body, **params), 400, code, named)
    assert row_counts() == counts
    assert not Report.objects.exists()
