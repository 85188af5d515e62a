"""django-q2 entry points: read the clock, call one service, return a one-line summary."""

from django.conf import settings
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


def sla_sweep() -> str:
    """Scheduled every minute ("sla-sweep"): take the escalation steps due and deliver what they queued,
    sweeping again every PORTAL_SWEEP_INTERVAL_SECONDS for PORTAL_SWEEP_LOOP_SECONDS."""
    from escalation.services import engine

    return engine.engine_sweep_loop(
        seconds=settings.PORTAL_SWEEP_LOOP_SECONDS,
        interval=settings.PORTAL_SWEEP_INTERVAL_SECONDS,
        clock=timezone.now,
    )


def engine_heartbeat() -> str:
    """Scheduled every minute ("engine-heartbeat"): /readyz/engine reports the worker stale when this stops."""
    from escalation.services import engine

    beat = engine.engine_heartbeat(now=timezone.now())
    return f"worker heartbeat at {beat.at:%H:%M:%S}"


def notifications_deliver() -> str:
    """Scheduled every minute ("notifications-deliver"): one delivery pass over the outbox."""
    from escalation.services import notifications

    return notifications.notifications_deliver(now=timezone.now()).summary()


def detect_patterns() -> str:
    """Scheduled every 15 minutes ("detect-patterns"): run the fallout rules, open or propose fallouts."""
    from escalation.services import fallout

    return fallout.detect_patterns(now=timezone.now()).summary()


def digests_send_due() -> str:
    """Scheduled every 5 minutes ("digests"): store and queue the standup digests and reports now due."""
    from escalation.services.digests import compose

    sent = compose.digests_send_due(now=timezone.now())
    queued = sum(s.notifications for s in sent)
    return f"{sum(s.created for s in sent)} digests stored, {queued} messages queued"
