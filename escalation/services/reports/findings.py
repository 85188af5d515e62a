"""Findings of security and secret scans (SARIF, Trivy, gitleaks, trufflehog, detect-secrets) -> failures.

- A finding's severity comes from its CVSS score (``security-severity``) by band, its level or the
  tool's own severity as fallback: critical, high and medium open vulnerability failures; low and
  informational ones are recorded on the report only; suppressed ones are recorded, never opened.
- Any finding of a secret scanner opens ``secret_detected`` with a credential-rotation task for the
  committer and Security at once; it resolves only when the rotation is confirmed.
- A scan by one tool and category that no longer reports an open finding of the same repository
  and branch resolves it; findings of other tools and categories are untouched, secrets too.
- Secret values never reach a stored field: parsers drop them, and ``redact`` scrubs any text kept.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import parseaddr

from escalation.choices import EscalationStep, FailureType, Resolution, Role, Severity
from escalation.models import CredentialRotation, Failure, Finding, Team, TicketTracker
from escalation.models.failures import OPEN_Q
from escalation.services.failures import failures_resolve
from escalation.services.notifications import Message, failure_summary, notifications_write
from escalation.services.reports.upload import FailingItem, Upload, clean, item_label, items_report, short_hash
from escalation.services.routing import person_for_author, role_team

REDACTED = "[REDACTED]"
_SEVERITY_TYPE = {
    Severity.CRITICAL: FailureType.VULNERABILITY_CRITICAL,
    Severity.HIGH: FailureType.VULNERABILITY_HIGH,
    Severity.MEDIUM: FailureType.VULNERABILITY_MEDIUM,
}
_LEVEL_SEVERITY = {"error": Severity.HIGH, "warning": Severity.MEDIUM, "note": Severity.LOW, "none": Severity.NONE}
_TOOL_SEVERITY = {
    "critical": Severity.CRITICAL,
    "high": Severity.HIGH,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "low": Severity.LOW,
    "info": Severity.NONE,
    "unknown": Severity.NONE,
    "negligible": Severity.NONE,
}
_BATCH = 1000


@dataclass
class ParsedFinding:
    """A finding as a parser read it. ``secrets`` holds the values to scrub; they are never stored."""

    tool: str
    rule_id: str
    severity: str
    identity: tuple  # what makes the finding the same one in the next scan (within tool and category)
    category: str = ""
    title: str = ""
    score: float | None = None
    level: str = ""
    location: str = ""
    line: int | None = None
    is_secret: bool = False
    is_suppressed: bool = False
    skip_reason: str = ""  # recorded, never opened (e.g. audited as not a secret)
    commit_sha: str = ""
    committer: str = ""
    message: str = ""
    tags: list[str] = field(default_factory=list)
    secrets: tuple[str, ...] = ()


def severity_of_score(score: float) -> str:
    """CVSS bands: >= 9 critical, 7-8.9 high, 4-6.9 medium, above 0 low."""
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    return Severity.LOW if score > 0 else Severity.NONE


def severity_of_level(level: str) -> str:
    """SARIF level: error -> high, warning (the default) -> medium, note -> low, none."""
    return _LEVEL_SEVERITY.get((level or "warning").lower(), Severity.MEDIUM)


def severity_of_label(label: str) -> str:
    """A tool's own severity word (Trivy's CRITICAL ... UNKNOWN)."""
    return _TOOL_SEVERITY.get((label or "").strip().lower(), Severity.NONE)


def score_of(value) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 0.0 <= score <= 10.0 else None


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret value in it replaced by [REDACTED]."""
    for secret in sorted({s for s in secrets if s and len(s.strip()) >= 3}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def committer_of(raw: str) -> str:
    """An e-mail from 'Name <mail>' or a bare e-mail or name."""
    name, address = parseaddr(raw or "")
    return (address or name or raw or "").strip()


def findings_store(*, upload: Upload, findings: Iterable[ParsedFinding], scopes: set[tuple[str, str]]) -> dict:
    """Record every finding on the report, open failures for those that deserve one, resolve the
    open findings each scanned scope (tool, category) no longer reports. Returns the receipt counts."""
    by_severity: Counter = Counter()
    results = 0
    items: list[FailingItem] = []
    item_rows: list[Finding] = []
    seen: set[str] = set()
    batch: list[Finding] = []
    for parsed in findings:
        results += 1
        by_severity[parsed.severity] += 1
        row = _row(upload, parsed)
        batch.append(row)
        reason = _skip_reason(parsed, row.key in seen)
        if reason:
            upload.ignore(reason)
        else:
            seen.add(row.key)
            items.append(_item(parsed, row))
            item_rows.append(row)
        if len(batch) >= _BATCH:
            Finding.objects.bulk_create(batch)
            batch = []
    Finding.objects.bulk_create(batch)
    failures = items_report(upload=upload, items=items)
    for row, failure in zip(item_rows, failures, strict=True):
        row.failure = failure
    Finding.objects.bulk_update(item_rows, ["failure"], batch_size=_BATCH)
    _rotations_open(upload, [f for f in failures if f.failure_type == FailureType.SECRET_DETECTED], item_rows)
    _scopes_resolve(upload, scopes, {f.pk for f in failures})
    report = upload.report
    report.results = results
    report.by_severity = {level: by_severity.get(level, 0) for level in Severity.values}
    report.save()
    return {"results": results, "by_severity": report.by_severity, "accepted": results}


def _row(upload: Upload, parsed: ParsedFinding) -> Finding:
    def scrub(text: str, limit: int) -> str:
        return clean(redact(clean(text), parsed.secrets), limit)

    return Finding(
        report=upload.report,
        tool=scrub(parsed.tool, 200),
        category=scrub(parsed.category, 200),
        rule_id=scrub(parsed.rule_id, 300),
        title=scrub(parsed.title, 500),
        severity=parsed.severity,
        score=parsed.score,
        level=scrub(parsed.level, 16),
        location=scrub(parsed.location, 1000),
        line=parsed.line if parsed.line and 0 < parsed.line < 2**31 else None,
        key=short_hash(parsed.tool, parsed.category, *parsed.identity),
        is_secret=parsed.is_secret,
        is_suppressed=parsed.is_suppressed,
        commit_sha=scrub(parsed.commit_sha, 64),
        committer=scrub(parsed.committer, 254),
        message=scrub(parsed.message, 4000),
        tags=[scrub(tag, 100) for tag in parsed.tags[:20] if isinstance(tag, str)],
    )


def _skip_reason(parsed: ParsedFinding, duplicate: bool) -> str:
    if parsed.is_suppressed:
        return "suppressed"
    if parsed.skip_reason:
        return parsed.skip_reason
    if not parsed.is_secret and parsed.severity not in _SEVERITY_TYPE:
        return "below_medium"
    if duplicate:
        return "duplicate_in_report"
    return ""


def _item(parsed: ParsedFinding, row: Finding) -> FailingItem:
    scope = "/".join(part for part in (row.tool, row.category) if part)
    where = f"{row.location}:{row.line}" if row.line else row.location
    failure_type = FailureType.SECRET_DETECTED if parsed.is_secret else _SEVERITY_TYPE[parsed.severity]
    text = row.message or row.title or row.rule_id
    return FailingItem(
        key=row.key,
        label=item_label(scope, row.rule_id, f"{where} #{row.key[:8]}"),
        text=f"{row.severity}: {text}",
        fields={"tool": row.tool, "category": row.category, "rule": row.rule_id, "severity": row.severity},
        type_hint=failure_type,
        commit_author=row.committer if parsed.is_secret else None,
    )


def _rotations_open(upload: Upload, failures: list[Failure], rows: list[Finding]) -> None:
    """A credential-rotation task for each secret failure, assigned to the committer and Security at once,
    with a ticket to Security's tracker."""
    if not failures:
        return
    committers = {row.failure_id: row.committer for row in rows if row.failure_id}
    have = set(CredentialRotation.objects.filter(failure__in=failures).values_list("failure_id", flat=True))
    security = role_team(
        config=upload.config, role=Role.SECURITY_SPECIALIST, repository=upload.repository.name, paths=[]
    )
    tasks = []
    for failure in {f.pk: f for f in failures}.values():
        if failure.pk in have:
            continue
        committer = committers.get(failure.pk, "")
        person = person_for_author(committer)
        tasks.append(
            CredentialRotation(
                failure=failure,
                committer=committer,
                assignee=person,
                assignee_team_id=person.team_id if person else None,
                security_team_id=security,
                opened_at=upload.now,
            )
        )
    CredentialRotation.objects.bulk_create(tasks)
    _rotation_tickets(upload, [task.failure for task in tasks], security)


def _rotation_tickets(upload: Upload, failures: list[Failure], security: int | None) -> None:
    """A ticket to the security team's tracker for each new rotation task, in the outbox with the task."""
    tracker = TicketTracker.objects.filter(team_id=security).first() if security and failures else None
    if tracker is None:
        return
    team_ids = {t for f in failures for t in (f.owner_team_id, f.secondary_team_id) if t}
    teams = dict(Team.objects.filter(pk__in=team_ids).values_list("pk", "name"))
    messages = []
    for failure in failures:
        summary = failure_summary(failure, teams=teams)
        subject = f"Rotate the leaked credential: {summary['repository']} {summary['branch']} (failure #{failure.pk})"
        label = "Credential rotation: rotate the leaked credential, then confirm the rotation in the portal"
        body = f"{label}\n\n{subject}\n{summary['url']}"
        data = {"step": EscalationStep.TICKET, "step_label": label, "title": subject, "failures": [summary],
                "group": None, "url": summary["url"]}  # fmt: skip
        messages.append(
            Message(subject=subject, body=body, data=data, failure_ids=[failure.pk], step=EscalationStep.TICKET,
                    tracker=tracker, dedupe_key=f"rotation:{failure.pk}:ticket")
        )  # fmt: skip
    notifications_write(messages, now=upload.now)


def _scopes_resolve(upload: Upload, scopes: set[tuple[str, str]], still_found: set[int]) -> None:
    for tool, category in sorted(scopes):
        stale = (
            Failure.objects.filter(
                OPEN_Q,
                repository=upload.repository,
                branch=upload.run.branch,
                findings__tool=tool,
                findings__category=category,
                findings__is_secret=False,
            )
            .exclude(failure_type=FailureType.SECRET_DETECTED)
            .exclude(pk__in=still_found)
            .values_list("pk", flat=True)
            .distinct()
        )
        ids = list(stale)
        if ids:
            scope = "/".join(part for part in (tool, category) if part)
            failures_resolve(
                failure_ids=ids,
                resolution=Resolution.FIXED,
                actor=upload.actor,
                now=upload.now,
                note=f"a later scan by {scope} no longer reports it",
            )
            upload.recovered.extend(ids)
