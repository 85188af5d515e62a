"""SARIF 2.1.0 from any tool: several runs, rules, results, levels, security-severity, tags,
partial fingerprints, suppressions. Read streaming in two passes: the runs' tools first (a run may
list its results before its tool), then the results one at a time."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from escalation.choices import Severity
from escalation.exceptions import MalformedReport, WrongReportFormat
from escalation.services.reports.findings import (
    ParsedFinding,
    findings_store,
    score_of,
    severity_of_level,
    severity_of_score,
)
from escalation.services.reports.jsonstream import first_char, json_values, top_keys
from escalation.services.reports.upload import Body, Upload

SECRET_SCANNERS = re.compile(r"gitleaks|trufflehog|detect[-_ ]?secrets|ggshield|secret", re.IGNORECASE)
_SHAPES = {
    "": "object",
    "runs": "array",
    "runs.item": "object",
    "runs.item.tool": "object",
    "runs.item.tool.driver": "object",
    "runs.item.results": "array",
    "runs.item.results.item": "object",
}


@dataclass
class _Rule:
    level: str
    score: float | None
    tags: list[str]
    title: str


@dataclass
class _Run:
    tool: str
    category: str
    rules_by_id: dict[str, _Rule]
    rules_by_index: list[_Rule]
    is_secret_scanner: bool


def sarif_check(body: Body) -> None:
    """Refuse what is not a SARIF log before anything is stored."""
    if first_char(body.file) != "{":
        raise WrongReportFormat("a SARIF report is a JSON object; this body is not one")
    keys = top_keys(body.file)
    if "runs" not in keys:
        raise MalformedReport("not a SARIF log: it has no 'runs' (SARIF 2.1.0 requires it; an empty scan is [])")
    version = keys.get("version")
    if version is not None and version != "2.1.0":
        raise WrongReportFormat(f"SARIF version {version!r} is not supported; send 2.1.0")


def sarif_store(upload: Upload, body: Body, *, category: str = "") -> dict:
    """Store a SARIF log's results as findings of their run's tool and category."""
    sarif_check(body)
    runs = _runs(body, category)
    scopes = {(run.tool, run.category) for run in runs.values()}
    counts = findings_store(upload=upload, findings=_findings(body, runs), scopes=scopes)
    return upload.receipt(runs=len(runs), **counts)


def _runs(body: Body, category: str) -> dict[int, _Run]:
    runs: dict[int, dict] = {}
    wanted = {"runs.item.tool", "runs.item.automationDetails"}
    for (index,), path, value in json_values(body.file, wanted, shapes=_SHAPES_TOP):
        runs.setdefault(index, {})[path.rsplit(".", 1)[1]] = value
    return {index: _run(index, data, category) for index, data in runs.items()}


# The first pass builds only the tool and automationDetails of each run, never its results.
_SHAPES_TOP = {key: value for key, value in _SHAPES.items() if "results" not in key}


def _run(index: int, data: dict, category: str) -> _Run:
    tool = data.get("tool")
    driver = tool.get("driver") if isinstance(tool, dict) else None
    if not isinstance(driver, dict) or not isinstance(driver.get("name"), str) or not driver["name"].strip():
        raise MalformedReport(f"runs[{index}].tool.driver.name is missing: every SARIF run names its tool")
    name = driver["name"].strip()
    rules = [_rule(rule) for rule in _list(driver.get("rules"), f"runs[{index}].tool.driver.rules")]
    raw_rules = _list(driver.get("rules"), "")
    by_id = {r.get("id"): rule for r, rule in zip(raw_rules, rules, strict=True) if isinstance(r, dict)}
    automation = data.get("automationDetails")
    automation_id = automation.get("id", "") if isinstance(automation, dict) else ""
    run_category = category or _category_of(automation_id if isinstance(automation_id, str) else "")
    return _Run(name, run_category, by_id, rules, bool(SECRET_SCANNERS.search(name)))


def _category_of(automation_id: str) -> str:
    """GitHub's convention: the category is the automation id up to its last '/'."""
    head, slash, _ = automation_id.rpartition("/")
    return head if slash else automation_id


def _rule(raw: Any) -> _Rule:
    if not isinstance(raw, dict):
        return _Rule("", None, [], "")
    config = raw.get("defaultConfiguration")
    props = raw.get("properties") if isinstance(raw.get("properties"), dict) else {}
    short = raw.get("shortDescription")
    title = short.get("text", "") if isinstance(short, dict) else ""
    return _Rule(
        level=config.get("level", "") if isinstance(config, dict) else "",
        score=score_of(props.get("security-severity")),
        tags=[tag for tag in _list(props.get("tags"), "") if isinstance(tag, str)],
        title=title if isinstance(title, str) else "",
    )


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        if where:
            raise MalformedReport(f"{where} must be a JSON array")
        return []
    return value


def _findings(body: Body, runs: dict[int, _Run]) -> Iterator[ParsedFinding]:
    for (run_index, result_index), _, result in json_values(body.file, {"runs.item.results.item"}, shapes=_SHAPES):
        if run_index not in runs:
            raise MalformedReport(f"runs[{run_index}].tool is missing: every SARIF run names its tool")
        yield _finding(runs[run_index], result, f"runs[{run_index}].results[{result_index}]")


def _finding(run: _Run, result: dict, where: str) -> ParsedFinding:
    rule_id = result.get("ruleId") or _nested(result, "rule", "id") or ""
    if not isinstance(rule_id, str):
        raise MalformedReport(f"{where}.ruleId must be a string")
    rule = _rule_of(run, result, rule_id)
    props = result.get("properties") if isinstance(result.get("properties"), dict) else {}
    score = score_of(props.get("security-severity"))
    score = score if score is not None else rule.score
    level = result.get("level") or rule.level or "warning"
    severity = severity_of_score(score) if score is not None else severity_of_level(str(level))
    uri, line, snippet = _location(result)
    fingerprints = _fingerprints(result)
    message = _nested(result, "message", "text") or ""
    tags = [tag for tag in _list(props.get("tags"), "") if isinstance(tag, str)] or rule.tags
    is_secret = run.is_secret_scanner or any(tag.lower() == "secret" for tag in tags)
    partial = result.get("partialFingerprints") if isinstance(result.get("partialFingerprints"), dict) else {}
    return ParsedFinding(
        tool=run.tool,
        category=run.category,
        rule_id=rule_id,
        title=rule.title,
        severity=Severity.HIGH if is_secret and severity not in (Severity.CRITICAL, Severity.HIGH) else severity,
        score=score,
        level=str(level),
        location=uri,
        line=line,
        identity=fingerprints or (rule_id, uri, line, message if isinstance(message, str) else ""),
        is_secret=is_secret,
        is_suppressed=_suppressed(result),
        commit_sha=str(partial.get("commitSha", "")) if is_secret else "",
        committer=str(partial.get("email") or partial.get("author") or "") if is_secret else "",
        message=message if isinstance(message, str) else "",
        tags=tags,
        secrets=(snippet,) if is_secret and snippet else (),
    )


def _rule_of(run: _Run, result: dict, rule_id: str) -> _Rule:
    index = result.get("ruleIndex")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(run.rules_by_index):
        return run.rules_by_index[index]
    return run.rules_by_id.get(rule_id) or _Rule("", None, [], "")


def _nested(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _location(result: dict) -> tuple[str, int | None, str]:
    locations = result.get("locations")
    if not isinstance(locations, list) or not locations:
        return "", None, ""
    physical = _nested(locations[0], "physicalLocation") or {}
    uri = _nested(physical, "artifactLocation", "uri")
    line = _nested(physical, "region", "startLine")
    snippet = _nested(physical, "region", "snippet", "text")
    return (
        uri if isinstance(uri, str) else "",
        line if isinstance(line, int) and not isinstance(line, bool) else None,
        snippet if isinstance(snippet, str) else "",
    )


def _fingerprints(result: dict) -> tuple:
    """Stable identities the tool gave the result, if any (they survive line moves)."""
    for key in ("fingerprints", "partialFingerprints"):
        value = result.get(key)
        if isinstance(value, dict) and value:
            stable = {k: v for k, v in value.items() if k not in ("commitMessage", "date")}
            return tuple(sorted((str(k), str(v)) for k, v in stable.items()))
    return ()


def _suppressed(result: dict) -> bool:
    """Suppressed unless every suppression was rejected or is still under review."""
    suppressions = result.get("suppressions")
    if not isinstance(suppressions, list) or not suppressions:
        return False
    return any(not isinstance(s, dict) or s.get("status", "accepted") == "accepted" for s in suppressions)
