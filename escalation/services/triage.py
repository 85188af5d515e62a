"""QA triage: each failure on a protected branch is due for triage PORTAL_TRIAGE_MINUTES after it opens.

Triage ends with a verdict on the type. Confirming acknowledges the failure and counts for the rule
that decided its type; correcting (``failures.failure_correct_type``) re-routes it and counts
against that rule. The counts give each rule its precision (selectors.rules_with_stats).
"""

from datetime import datetime

from django.db import transaction

from escalation.choices import FailureStatus, TriageVerdict
from escalation.models import Failure, TimelineEntry
from escalation.models.failures import OPEN_Q, TimelineKind
from escalation.services.classification import FALLBACK
from escalation.services.failures import require_permission
from escalation.services.timeline import timeline_entry
from portal.audit import Actor, audit_bulk, row_state
from portal.models import AuditAction


def failures_confirm_type(*, failure_ids: list[int], actor: Actor, now: datetime, note: str = "") -> int:
    """Confirm the types of open, untriaged failures: acknowledged, out of the queue, a point for their rule.

    Returns how many changed; failures already triaged or resolved are left as they are.
    """
    require_permission(actor, "escalation.confirm_failure_type")
    with transaction.atomic():
        failures = list(
            Failure.objects.select_for_update(of=("self",))
            .select_related("classification_rule")
            .filter(OPEN_Q, id__in=failure_ids, triaged_at__isnull=True)
            .order_by("id")
        )
        changes, entries = [], []
        for failure in failures:
            before = row_state(failure)
            if failure.status == FailureStatus.OPEN:
                failure.status = FailureStatus.ACKNOWLEDGED
                failure.acknowledged_at, failure.acknowledged_by = now, actor.user
            failure.triage_verdict, failure.triaged_at, failure.triaged_by = TriageVerdict.CONFIRMED, now, actor.user
            changes.append((failure, before, row_state(failure)))
            entries.append(_confirmed_entry(failure, actor, now, note))
        fields = ["status", "acknowledged_at", "acknowledged_by", "triage_verdict", "triaged_at", "triaged_by"]
        Failure.objects.bulk_update(failures, fields)
        TimelineEntry.objects.bulk_create(entries)
        audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=changes, at=now, reason=note)
    return len(failures)


def _confirmed_entry(failure: Failure, actor: Actor, now: datetime, note: str) -> TimelineEntry:
    rule = failure.classification_rule
    if rule is not None:
        decided = f"; rule {rule.name!r} marked right"
    elif failure.classified_by == FALLBACK:
        decided = " (no rule matched; the fallback type stands)"
    else:
        decided = f" ({failure.classified_by})"
    message = f"Type {failure.failure_type} confirmed by {actor.label}{decided}. {note}".strip()
    data = {"type": failure.failure_type, "rule": rule.name if rule else None, "verdict": "confirmed"}
    return timeline_entry(failure, now, TimelineKind.TYPE_CONFIRMED, actor, message, data)
