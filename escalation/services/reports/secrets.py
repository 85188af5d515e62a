"""Secret-scanner reports: gitleaks JSON (v8 and v7 keys), trufflehog JSON lines (v2 and v3) and
detect-secrets baselines. Each finding opens secret_detected; the secret itself is never kept.

Every parser hands the secret values it sees (Secret, Match, offender, stringsFound, Raw, RawV2,
...) to ``redact`` and stores only where the secret is: rule, file, line, commit and committer.
"""

import base64
import binascii
import json
from collections.abc import Iterator
from typing import IO, Any

from escalation.choices import Severity
from escalation.exceptions import MalformedReport, WrongReportFormat
from escalation.services.reports.findings import ParsedFinding, committer_of, findings_store
from escalation.services.reports.jsonstream import first_char, json_values, top_keys
from escalation.services.reports.upload import Body, Upload

FORMATS = ("gitleaks", "trufflehog", "detect-secrets")
_MAX_LINE = 8 * 1024 * 1024


def secrets_format_detect(body: Body) -> str:
    """gitleaks writes a JSON array, trufflehog one JSON object per line, detect-secrets one object."""
    first = first_char(body.file)
    if first == "[":
        return "gitleaks"
    if first != "{":
        raise WrongReportFormat("not a secret-scanner report: expected gitleaks, trufflehog or detect-secrets JSON")
    line = body.file.readline(_MAX_LINE)
    body.file.seek(0)
    try:
        record = json.loads(line.lstrip(b"\xef\xbb\xbf"))
    except ValueError:
        record = None
    if isinstance(record, dict) and _is_trufflehog(record):
        return "trufflehog"
    keys = top_keys(body.file)
    if "results" in keys and ("plugins_used" in keys or "generated_at" in keys or "version" in keys):
        return "detect-secrets"
    if "runs" in keys:
        raise WrongReportFormat("this is a SARIF log: send it to /api/v1/reports/sarif/")
    if "SchemaVersion" in keys:
        raise WrongReportFormat("this is a Trivy report: send it to /api/v1/reports/trivy/")
    raise WrongReportFormat("not a secret-scanner report: expected gitleaks, trufflehog or detect-secrets JSON")


def _is_trufflehog(record: dict) -> bool:
    return "SourceMetadata" in record or "DetectorName" in record or "stringsFound" in record


def secrets_store(upload: Upload, body: Body, *, report_format: str) -> dict:
    """Store a secret-scanner report. The tool is the format; secrets are never resolved by a scan."""
    parse = {"gitleaks": _gitleaks, "trufflehog": _trufflehog, "detect-secrets": _detect_secrets}[report_format]
    counts = findings_store(upload=upload, findings=parse(body), scopes=set())
    return upload.receipt(**counts)


def _text(item: dict, *keys: str) -> str:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _int(item: dict, *keys: str) -> int | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _gitleaks(body: Body) -> Iterator[ParsedFinding]:
    if first_char(body.file) != "[":
        raise WrongReportFormat("a gitleaks JSON report is a JSON array of findings")
    for (index,), _, item in json_values(body.file, {"item"}, shapes={"": "array", "item": "object"}):
        if not ("RuleID" in item or "rule" in item or "Secret" in item or "offender" in item):
            raise WrongReportFormat(f"[{index}] is not a gitleaks finding (no RuleID / rule)")
        rule = _text(item, "RuleID", "rule")
        path = _text(item, "File", "file")
        line = _int(item, "StartLine", "lineNumber")
        commit = _text(item, "Commit", "commit")
        yield ParsedFinding(
            tool="gitleaks",
            rule_id=rule,
            title=_text(item, "Description", "rule"),
            severity=Severity.HIGH,
            location=path,
            line=line,
            identity=(rule, path, line, commit),
            is_secret=True,
            commit_sha=commit,
            committer=committer_of(_text(item, "Email", "email", "Author", "author")),
            message=f"{rule} in {path}" + (f" line {line}" if line else "") + (f" at {commit[:12]}" if commit else ""),
            tags=[tag for tag in _list(item.get("Tags") or item.get("tags")) if isinstance(tag, str)],
            secrets=tuple(_text(item, key) for key in ("Secret", "Match", "offender", "line") if _text(item, key)),
        )


def _list(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value:
        return [part.strip() for part in value.split(",") if part.strip()]
    return []


def _trufflehog(body: Body) -> Iterator[ParsedFinding]:
    for number, record in _json_lines(body.file):
        if not _is_trufflehog(record):
            raise WrongReportFormat(f"line {number} is not a trufflehog finding")
        yield (
            _trufflehog_v3(record) if "SourceMetadata" in record or "DetectorName" in record else _trufflehog_v2(record)
        )


def _json_lines(file: IO[bytes]) -> Iterator[tuple[int, dict]]:
    file.seek(0)
    for number, raw in enumerate(iter(lambda: file.readline(_MAX_LINE + 1), b""), start=1):
        if len(raw) > _MAX_LINE:
            raise MalformedReport(f"line {number} is longer than {_MAX_LINE} bytes")
        line = raw.strip().lstrip(b"\xef\xbb\xbf") if number == 1 else raw.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedReport(f"line {number} is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise MalformedReport(f"line {number} is not a JSON object")
        yield number, record


def _decoded(raw: str) -> str:
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


def _trufflehog_v3(record: dict) -> ParsedFinding:
    git = record.get("SourceMetadata", {}).get("Data", {}) if isinstance(record.get("SourceMetadata"), dict) else {}
    origin = next((value for value in git.values() if isinstance(value, dict)), {}) if isinstance(git, dict) else {}
    detector = _text(record, "DetectorName") or str(record.get("DetectorType", ""))
    path = _text(origin, "file", "path", "link")
    line = _int(origin, "line")
    commit = _text(origin, "commit")
    raw_values = [_text(record, "Raw"), _text(record, "RawV2")]
    verified = record.get("Verified") is True
    return ParsedFinding(
        tool="trufflehog",
        rule_id=detector,
        title=f"{detector} ({'verified' if verified else 'unverified'})",
        severity=Severity.CRITICAL if verified else Severity.HIGH,
        location=path,
        line=line,
        identity=(detector, path, line, commit),
        is_secret=True,
        commit_sha=commit,
        committer=committer_of(_text(origin, "email")),
        message=f"{detector} secret in {path}"
        + (f" line {line}" if line else "")
        + (f" at {commit[:12]}" if commit else ""),
        secrets=tuple(v for raw in raw_values if raw for v in (raw, _decoded(raw)) if v) + (_text(record, "Redacted"),),
    )


def _trufflehog_v2(record: dict) -> ParsedFinding:
    reason, path, commit = _text(record, "reason"), _text(record, "path"), _text(record, "commitHash")
    found = [value for value in _list(record.get("stringsFound")) if isinstance(value, str)]
    return ParsedFinding(
        tool="trufflehog",
        rule_id=reason,
        title=reason,
        severity=Severity.HIGH,
        location=path,
        identity=(reason, path, commit, _text(record, "branch")),
        is_secret=True,
        commit_sha=commit,
        message=f"{reason} in {path}" + (f" at {commit[:12]}" if commit else ""),
        secrets=tuple(found),
    )


def _detect_secrets(body: Body) -> Iterator[ParsedFinding]:
    keys = top_keys(body.file)
    if keys.get("results") != "object":
        raise WrongReportFormat("not a detect-secrets baseline: 'results' must map file names to findings")
    for _, path, findings in json_values(body.file, {"results"}, shapes={"": "object", "results": "object"}):
        del path
        for filename, items in findings.items():
            if not isinstance(items, list):
                raise MalformedReport(f"results[{filename!r}] must be a JSON array")
            for item in items:
                if not isinstance(item, dict):
                    raise MalformedReport(f"results[{filename!r}] holds a finding that is not a JSON object")
                yield _detect_secrets_finding(filename, item)


def _detect_secrets_finding(filename: str, item: dict) -> ParsedFinding:
    kind = _text(item, "type")
    line = _int(item, "line_number")
    audited_false = item.get("is_secret") is False
    return ParsedFinding(
        tool="detect-secrets",
        rule_id=kind,
        title=kind,
        severity=Severity.HIGH,
        location=_text(item, "filename") or filename,
        line=line,
        identity=(kind, filename, line),
        is_secret=True,
        skip_reason="audited_not_a_secret" if audited_false else "",
        message=f"{kind} in {filename}" + (f" line {line}" if line else ""),
        secrets=(_text(item, "hashed_secret"), _text(item, "secret")),
    )
