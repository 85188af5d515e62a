"""django-q2 entry points: read the clock, call one service, return a one-line summary."""

from django.utils import timezone

from escalation.services import rule_changes


def rule_change_preview(change_id: int) -> str:
    """Preview a rule change too large to preview inside a request."""
    change = rule_changes.rule_change_preview(change_id=change_id, now=timezone.now())
    return f"rule change #{change_id}: {change.status}, {change.affected_count} failures would change"


def rule_change_apply(change_id: int) -> str:
    """Re-type the failures of an applied rule change too large to apply inside a request."""
    change = rule_changes.rule_change_apply_effects(change_id=change_id, now=timezone.now())
    return f"rule change #{change_id}: {change.status}, {change.progress_done} of {change.progress_total} failures"
