"""Fallout patterns: detectors per rule code (``patterns``), the fallouts they open or propose and the
decisions on them (``lifecycle``). See README "Fallout patterns"."""

from escalation.services.fallout.errors import FalloutNotDecidable, FalloutReasonRequired, InvalidFalloutRule
from escalation.services.fallout.lifecycle import (
    DetectionResult,
    detect_patterns,
    fallout_close,
    fallout_confirm,
    fallout_dismiss,
    fallout_messages,
    fallout_rule_check,
    fallout_rule_problem,
    fallout_upsert,
    fallout_url,
)
from escalation.services.fallout.patterns import DETECTORS, DetectorSpec, Hit, Trigger, Window, detector, scope_hits
from escalation.services.fallout.selectors import fallouts_list

__all__ = [
    "DETECTORS",
    "DetectionResult",
    "DetectorSpec",
    "FalloutNotDecidable",
    "FalloutReasonRequired",
    "Hit",
    "InvalidFalloutRule",
    "Trigger",
    "Window",
    "detect_patterns",
    "detector",
    "fallout_close",
    "fallout_confirm",
    "fallout_dismiss",
    "fallout_messages",
    "fallout_rule_check",
    "fallout_rule_problem",
    "fallout_upsert",
    "fallout_url",
    "fallouts_list",
    "scope_hits",
]
