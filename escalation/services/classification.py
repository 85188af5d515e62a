"""Classification: which failure type a CI event reports, and the evidence that decided it.

Precedence: a valid ``type`` hint from CI, then the enabled rules by position (the default set
puts infrastructure log patterns first, then other log patterns, then job and step names), then
the fallback type, which triage shows as unclassified.
"""

from dataclasses import dataclass
from typing import Any

from escalation.choices import FALLBACK_TYPE, FailureType, RuleField
from escalation.services.config import CompiledRule

TYPE_HINT = "type hint"
FALLBACK = "fallback"
_EVIDENCE_CHARS = 500


@dataclass(frozen=True)
class Classification:
    failure_type: str
    classified_by: str
    rule_id: int | None
    matched_text: str


def failure_classify(
    *,
    rules: list[CompiledRule],
    job: str,
    step: str = "",
    log_excerpt: str = "",
    type_hint: str = "",
    event_fields: dict[str, Any] | None = None,
) -> Classification:
    if type_hint in FailureType.values:
        return Classification(type_hint, TYPE_HINT, None, type_hint)
    texts = {RuleField.JOB: job, RuleField.STEP: step, RuleField.LOG: log_excerpt}
    fields = event_fields or {}
    for rule in rules:
        text = str(fields.get(rule.event_field, "")) if rule.field == RuleField.EVENT_FIELD else texts[rule.field]
        if not text:
            continue
        match = rule.regex.search(text)
        if match:
            return Classification(rule.failure_type, rule.name, rule.id, _line_of(text, match)[:_EVIDENCE_CHARS])
    return Classification(FALLBACK_TYPE, FALLBACK, None, "")


def _line_of(text: str, match) -> str:
    """The whole line the match sits on: the evidence a person reads."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end != -1 else len(text)].strip()
