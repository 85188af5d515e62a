"""Trivy JSON (schema version 2): vulnerabilities, secrets and failed misconfigurations, read one
result (target) at a time and mapped like SARIF findings."""

from collections.abc import Iterator

from escalation.choices import Severity
from escalation.exceptions import MalformedReport, WrongReportFormat
from escalation.services.reports.findings import (
    ParsedFinding,
    findings_store,
    score_of,
    severity_of_label,
    severity_of_score,
)
from escalation.services.reports.jsonstream import first_char, json_values, top_keys
from escalation.services.reports.upload import Body, Upload

TOOL = "Trivy"
_SHAPES = {"": "object", "Results": "array", "Results.item": "object"}


def trivy_store(upload: Upload, body: Body, *, category: str = "") -> dict:
    """Store a Trivy report's findings under the scope (Trivy, category or the scanned artifact)."""
    if first_char(body.file) != "{":
        raise WrongReportFormat("a Trivy report is a JSON object (trivy --format json); this body is not one")
    keys = top_keys(body.file)
    if "runs" in keys:
        raise WrongReportFormat("this is a SARIF log: send it to /api/v1/reports/sarif/")
    if "SchemaVersion" not in keys:
        raise WrongReportFormat("not a Trivy JSON report: it has no SchemaVersion")
    if keys["SchemaVersion"] != 2:
        raise WrongReportFormat(f"Trivy SchemaVersion {keys['SchemaVersion']!r} is not supported; send version 2")
    artifact = keys.get("ArtifactName") if isinstance(keys.get("ArtifactName"), str) else ""
    scope_category = category or artifact
    counts = findings_store(upload=upload, findings=_findings(body, scope_category), scopes={(TOOL, scope_category)})
    return upload.receipt(artifact=artifact, **counts)


def _findings(body: Body, category: str) -> Iterator[ParsedFinding]:
    for (index,), _, result in json_values(body.file, {"Results.item"}, shapes=_SHAPES):
        target = result.get("Target") if isinstance(result.get("Target"), str) else ""
        for key, build in (("Vulnerabilities", _vulnerability), ("Secrets", _secret), ("Misconfigurations", _misconf)):
            items = result.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                raise MalformedReport(f"Results[{index}].{key} must be a JSON array")
            for position, item in enumerate(items):
                if not isinstance(item, dict):
                    raise MalformedReport(f"Results[{index}].{key}[{position}] must be a JSON object")
                finding = build(item, target, category)
                if finding is not None:
                    yield finding


def _text(item: dict, key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def _cvss_score(item: dict) -> float | None:
    """The NVD v3 score, else any source's v3 score, else a v2 score."""
    cvss = item.get("CVSS") if isinstance(item.get("CVSS"), dict) else {}
    sources = [cvss.get("nvd"), *[v for k, v in sorted(cvss.items()) if k != "nvd"]]
    for version in ("V3Score", "V2Score"):
        for source in sources:
            if isinstance(source, dict) and score_of(source.get(version)) is not None:
                return score_of(source.get(version))
    return None


def _vulnerability(item: dict, target: str, category: str) -> ParsedFinding:
    vuln_id, package = _text(item, "VulnerabilityID"), _text(item, "PkgName")
    version = _text(item, "InstalledVersion")
    score = _cvss_score(item)
    label = _text(item, "Severity")
    severity = severity_of_score(score) if score is not None else severity_of_label(label)
    title = _text(item, "Title")
    fixed = _text(item, "FixedVersion")
    return ParsedFinding(
        tool=TOOL,
        category=category,
        rule_id=vuln_id,
        title=title,
        severity=severity,
        score=score,
        level=label,
        location=f"{target} {package}@{version}".strip(),
        identity=("vulnerability", target, package, version, vuln_id),
        message=f"{vuln_id} in {package} {version}" + (f" (fixed in {fixed})" if fixed else "") + f": {title}",
    )


def _secret(item: dict, target: str, category: str) -> ParsedFinding:
    """Trivy masks the match itself; neither it nor the code lines around it are kept."""
    rule = _text(item, "RuleID")
    line = item.get("StartLine") if isinstance(item.get("StartLine"), int) else None
    severity = severity_of_label(_text(item, "Severity"))
    return ParsedFinding(
        tool=TOOL,
        category=category,
        rule_id=rule,
        title=_text(item, "Title"),
        severity=severity if severity in (Severity.CRITICAL, Severity.HIGH) else Severity.HIGH,
        level=_text(item, "Severity"),
        location=target,
        line=line,
        identity=("secret", target, rule, line),
        is_secret=True,
        message=f"{_text(item, 'Title') or rule} in {target}" + (f" line {line}" if line else ""),
        secrets=(_text(item, "Match"),),
    )


def _misconf(item: dict, target: str, category: str) -> ParsedFinding | None:
    if _text(item, "Status").upper() == "PASS":
        return None
    check = _text(item, "AVDID") or _text(item, "ID")
    label = _text(item, "Severity")
    return ParsedFinding(
        tool=TOOL,
        category=category,
        rule_id=check,
        title=_text(item, "Title"),
        severity=severity_of_label(label),
        level=label,
        location=target,
        identity=("misconfiguration", target, check, _text(item, "Message")),
        message=f"{_text(item, 'Title')}: {_text(item, 'Message')}".strip(": "),
    )
