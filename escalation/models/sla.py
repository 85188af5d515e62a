"""The SLA engine's records: clock pauses, storm groups, escalation steps taken, engine heartbeats."""

from django.db import models
from django.db.models import Q

from escalation.choices import EscalationStep


class ClockPause(models.Model):
    """An interval in which a failure's SLA clock stood still, and why."""

    failure = models.ForeignKey("escalation.Failure", on_delete=models.CASCADE, related_name="pauses")
    cause = models.ForeignKey(
        "escalation.Failure",
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The infrastructure failure open on the run of the failure's latest occurrence",
    )
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=300)

    class Meta:
        ordering = ["started_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["failure"], condition=Q(ended_at__isnull=True), name="one_open_pause"),
        ]
        indexes = [
            # pauses_end(): open pauses, joined to their cause.
            models.Index(fields=["cause"], condition=Q(ended_at__isnull=True), name="pause_open_cause_idx"),
        ]

    def __str__(self) -> str:
        return f"pause of #{self.failure_id} from {self.started_at:%Y-%m-%d %H:%M}"


class FailureGroup(models.Model):
    """Failures that share one cause: one error signature across jobs within the storm window, or one report."""

    key = models.CharField(max_length=300, help_text="signature:<signature> or upload:<job>:<time>")
    first_seen_at = models.DateTimeField()
    window_ends_at = models.DateTimeField(help_text="Failures first seen before this join the group")
    size = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        indexes = [models.Index(fields=["key", "window_ends_at"], name="failure_group_window_idx")]

    def __str__(self) -> str:
        return f"group #{self.pk} ({self.size}): {self.key[:80]}"


class Escalation(models.Model):
    """One ladder step taken for one failure: when, and who was told."""

    # No index of its own: escalation_step_once leads with this column.
    failure = models.ForeignKey(
        "escalation.Failure", on_delete=models.CASCADE, related_name="escalations", db_index=False
    )
    step = models.CharField(max_length=32, choices=EscalationStep.choices)
    due_at = models.DateTimeField()
    at = models.DateTimeField()
    group = models.ForeignKey(FailureGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    recipients = models.JSONField(default=list, help_text="Teams and channels told, or why nobody was")

    class Meta:
        ordering = ["at", "id"]
        constraints = [models.UniqueConstraint(fields=["failure", "step"], name="escalation_step_once")]

    def __str__(self) -> str:
        return f"#{self.failure_id} {self.step} at {self.at:%Y-%m-%d %H:%M}"


class EngineBeat(models.Model):
    """When a part of the engine last ran: the worker's heartbeat, the last SLA sweep."""

    name = models.CharField(max_length=32, unique=True)
    at = models.DateTimeField()
    detail = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"
