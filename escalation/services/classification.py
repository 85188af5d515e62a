"""Classification: which failure type a CI event reports, and the evidence that decided it.

Precedence, deliberate and documented in README "Classification":

1. a valid ``type`` hint from CI;
2. log patterns of infrastructure causes (a ``db-migrate`` job that died on "Connection refused"
   is database_connectivity, not a database test);
3. other log patterns (scanners, generators, benchmarks, compilers, test frameworks, database errors);
4. job and step names, changed files, event fields;
5. generic test-runner summaries ("3 failed, 41 passed"), which say a test failed but not which kind;
6. the fallback type, which the triage queue shows as unclassified.

Stages 2-5 are the rules' ``stage``; within a stage, the lowest position wins (rule_engine.py).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from escalation.choices import FALLBACK_TYPE, FailureType
from escalation.services.rule_engine import RuleEngine, classification_texts

TYPE_HINT = "type hint"
FALLBACK = "fallback"
_FAILURE_TYPES = frozenset(FailureType.values)  # FailureType.values builds a list on every access


@dataclass(frozen=True)
class Classification:
    failure_type: str
    classified_by: str
    rule_id: int | None
    matched_text: str
    tags: tuple[str, ...] = ()
    rule_version: int | None = None

    @property
    def is_fallback(self) -> bool:
        return self.classified_by == FALLBACK


def failure_classify(
    *,
    rules: RuleEngine,
    job: str,
    step: str = "",
    log_excerpt: str = "",
    type_hint: str = "",
    event_fields: dict[str, Any] | None = None,
    changed_files: Iterable[str] | None = None,
) -> Classification:
    """The failure type of one failing CI event by the precedence above, with the rule and matched line."""
    if type_hint in _FAILURE_TYPES:
        return Classification(type_hint, TYPE_HINT, None, type_hint)
    texts = classification_texts(
        job=job, step=step, log_excerpt=log_excerpt, changed_files=changed_files, event_fields=event_fields
    )
    match = rules.first_match(texts)
    if match is None:
        return Classification(FALLBACK_TYPE, FALLBACK, None, "")
    rule = match.rule
    return Classification(rule.failure_type, rule.name, rule.id, match.evidence, rule.tags, rule.version)
