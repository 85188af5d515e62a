"""Failures, their occurrences and their timeline."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from escalation.choices import ChangeSource, FailureStatus, FailureType, Resolution

OPEN_Q = Q(status__in=[FailureStatus.OPEN, FailureStatus.ACKNOWLEDGED])


class Failure(models.Model):
    """A CI failure that someone owns: one per fingerprint while open, however often it recurs."""

    failure_type = models.CharField(max_length=32, choices=FailureType.choices)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of repository, branch, job and type")
    repository = models.ForeignKey("escalation.Repository", on_delete=models.PROTECT, related_name="failures")
    branch = models.CharField(max_length=255)
    job_name = models.CharField(max_length=255)
    is_protected_branch = models.BooleanField()

    owner_team = models.ForeignKey(
        "escalation.Team", null=True, on_delete=models.PROTECT, related_name="owned_failures"
    )
    secondary_team = models.ForeignKey(
        "escalation.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="secondary_failures"
    )
    assignee = models.ForeignKey(
        "escalation.Person",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_failures",
    )

    status = models.CharField(max_length=16, choices=FailureStatus.choices, default=FailureStatus.OPEN)
    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    occurrence_count = models.PositiveIntegerField(default=1)
    latest_run = models.ForeignKey("escalation.CIRun", on_delete=models.PROTECT, related_name="+")

    matrix_snapshot = models.JSONField(help_text="The matrix row as it was when the failure opened")
    sla_due_at = models.DateTimeField(null=True, blank=True)
    triage_due_at = models.DateTimeField(null=True, blank=True)

    classified_by = models.CharField(
        max_length=120, help_text="The rule's name, 'type hint', or 'fallback' when nothing matched"
    )
    classification_rule = models.ForeignKey(
        "escalation.ClassificationRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    classification_text = models.TextField(blank=True, help_text="The text the rule matched")

    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        constraints = [
            # Concurrent events with one fingerprint must land on one failure: the loser of the
            # insert race adds an occurrence to the winner's row.
            models.UniqueConstraint(fields=["fingerprint"], condition=OPEN_Q, name="one_open_failure_per_fingerprint"),
        ]
        indexes = [
            # failures_past_due(): open failures ordered by due time.
            models.Index(fields=["sla_due_at"], condition=OPEN_Q, name="failure_open_due_idx"),
            # recover(): open failures of one repository, branch and job.
            models.Index(fields=["repository", "branch", "job_name"], condition=OPEN_Q, name="failure_open_job_idx"),
        ]
        permissions = [
            ("acknowledge_failure", "Can acknowledge failures"),
            ("resolve_failure", "Can resolve failures"),
            ("correct_failure_type", "Can correct a failure's type"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.failure_type} {self.repository_id}:{self.branch} {self.job_name}"

    @property
    def is_open(self) -> bool:
        return self.status != FailureStatus.RESOLVED


class FailureOccurrence(models.Model):
    """One CI event that reported this failure."""

    failure = models.ForeignKey(Failure, on_delete=models.CASCADE, related_name="occurrences")
    event = models.OneToOneField("escalation.CIEvent", on_delete=models.CASCADE, related_name="occurrence")
    seen_at = models.DateTimeField()

    class Meta:
        ordering = ["seen_at", "id"]

    def __str__(self) -> str:
        return f"{self.failure_id} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class TimelineKind(models.TextChoices):
    OPENED = "opened", "Opened"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"
    TYPE_CORRECTED = "type_corrected", "Type corrected"


class TimelineEntry(models.Model):
    """One change in a failure's life, in order."""

    failure = models.ForeignKey(Failure, on_delete=models.CASCADE, related_name="timeline")
    at = models.DateTimeField()
    kind = models.CharField(max_length=32, choices=TimelineKind.choices)
    actor = models.CharField(max_length=200, blank=True, help_text="User name or ingest source")
    source = models.CharField(max_length=16, choices=ChangeSource.choices)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        verbose_name_plural = "timeline entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.kind}"
