"""Failures, their occurrences and their timeline."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from escalation.choices import OPEN_STATUSES, ChangeSource, FailureStatus, FailureType, Resolution, TriageVerdict

OPEN_Q = Q(status__in=OPEN_STATUSES)
# The same condition in SQL, the statuses as literals: PostgreSQL proves a partial index's predicate
# from literals, also in the generic plan of a prepared statement, which it cannot from parameters.
OPEN_SQL = "status IN ({})".format(", ".join(f"'{status.value}'" for status in OPEN_STATUSES))
# The partial unique index that keeps one open failure per fingerprint (services name it when it refuses).
ONE_OPEN_FAILURE = "one_open_failure_per_fingerprint"


class Failure(models.Model):
    """A CI failure that someone owns: one per fingerprint while open, however often it recurs."""

    failure_type = models.CharField(max_length=32, choices=FailureType.choices)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of repository, branch, job and type")
    repository = models.ForeignKey("escalation.Repository", on_delete=models.PROTECT, related_name="failures")
    branch = models.CharField(max_length=255)
    job_name = models.CharField(max_length=255)
    is_protected_branch = models.BooleanField()

    # Foreign keys that no query looks failures up by have no index of their own (db_index=False): each
    # index is written again whenever the SLA sweep moves a failure's next step, and when one opens.
    owner_team = models.ForeignKey(
        "escalation.Team", null=True, on_delete=models.PROTECT, related_name="owned_failures"
    )
    secondary_team = models.ForeignKey(
        "escalation.Team",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="secondary_failures",
        db_index=False,
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
    # No database constraint on the keys to rows an event stores (see escalation.models.ingestion).
    latest_run = models.ForeignKey(
        "escalation.CIRun", on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )

    matrix_snapshot = models.JSONField(help_text="The matrix row as it was when the failure opened")
    sla_due_at = models.DateTimeField(null=True, blank=True)
    triage_due_at = models.DateTimeField(null=True, blank=True)
    at_risk_at = models.DateTimeField(null=True, blank=True, help_text="75 % of the SLA budget spent")
    ticket_due_at = models.DateTimeField(null=True, blank=True, help_text="When the tier wants a ticket")
    next_step_at = models.DateTimeField(
        null=True, blank=True, help_text="When the SLA sweep next has a ladder step to take; empty when none"
    )
    breached_at = models.DateTimeField(null=True, blank=True)
    escalation_level = models.PositiveSmallIntegerField(default=0)
    paused_at = models.DateTimeField(null=True, blank=True, help_text="Set while the SLA clock is paused")
    is_complex = models.BooleanField(default=False, help_text="database_test: use the complex SLA budget")
    group = models.ForeignKey(
        "escalation.FailureGroup", null=True, blank=True, on_delete=models.SET_NULL, related_name="failures"
    )
    resolution_plan = models.TextField(blank=True)
    resolution_plan_owner = models.ForeignKey(
        "escalation.Person", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    resolution_plan_due = models.DateField(null=True, blank=True)
    ticket_key = models.CharField(max_length=100, blank=True)
    ticket_url = models.URLField(max_length=500, blank=True)
    retry_advice_count = models.PositiveIntegerField(default=0, help_text="Retry advice answered for it")
    retries_advised = models.PositiveIntegerField(default=0, help_text="Of those, how many said retry")

    classified_by = models.CharField(
        max_length=120, help_text="The rule's name, 'type hint', or 'fallback' when nothing matched"
    )
    classification_rule = models.ForeignKey(
        "escalation.ClassificationRule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="classified_failures",
        help_text="The rule that decided the type; kept after a correction, which counts against it",
    )
    classification_rule_version = models.PositiveIntegerField(null=True, blank=True)
    classification_text = models.TextField(blank=True, help_text="The text the rule matched")
    classification_event = models.ForeignKey(
        "escalation.CIEvent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The event whose job, step, log and fields were classified",
        db_index=False,
        db_constraint=False,
    )
    tags = models.JSONField(default=list, blank=True, help_text="From the deciding rule, e.g. rate_limited")
    signature = models.CharField(
        max_length=255, blank=True, help_text="The normalised error line of the log excerpt; same error, same signature"
    )
    triage_verdict = models.CharField(max_length=16, choices=TriageVerdict.choices, blank=True)
    triaged_at = models.DateTimeField(null=True, blank=True)
    triaged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )

    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    resolution_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        constraints = [
            # Concurrent events with one fingerprint must land on one failure: the loser of the
            # insert race adds an occurrence to the winner's row.
            models.UniqueConstraint(fields=["fingerprint"], condition=OPEN_Q, name=ONE_OPEN_FAILURE),
        ]
        indexes = [
            # failures_past_due(): open failures ordered by due time.
            models.Index(fields=["sla_due_at"], condition=OPEN_Q, name="failure_open_due_idx"),
            # sla_sweep(): open failures with a ladder step due, claimed oldest first.
            models.Index(
                fields=["next_step_at"], condition=OPEN_Q & Q(next_step_at__isnull=False), name="failure_next_step_idx"
            ),
            # pauses_start(): open failures by the run of their latest occurrence.
            models.Index(fields=["latest_run"], condition=OPEN_Q, name="failure_open_run_idx"),
            # recover(): open failures of one repository, branch and job.
            models.Index(fields=["repository", "branch", "job_name"], condition=OPEN_Q, name="failure_open_job_idx"),
            # failures_awaiting_triage(): open failures not yet triaged, oldest first.
            models.Index(
                fields=["first_seen_at"],
                condition=OPEN_Q & Q(triaged_at__isnull=True, triage_due_at__isnull=False),
                name="failure_awaiting_triage_idx",
            ),
            # signatures_top() and failures_similar(): failures grouped by error signature.
            models.Index(fields=["signature", "first_seen_at"], name="failure_signature_idx"),
            # rule change previews: failures first seen since the window start.
            models.Index(fields=["first_seen_at"], name="failure_first_seen_idx"),
        ]
        permissions = [
            ("acknowledge_failure", "Can acknowledge failures"),
            ("resolve_failure", "Can resolve failures"),
            ("correct_failure_type", "Can correct a failure's type"),
            ("confirm_failure_type", "Can confirm a failure's type in triage"),
            ("mark_failure_complex", "Can mark a failure complex"),
            ("set_resolution_plan", "Can set a failure's resolution plan"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.failure_type} {self.repository_id}:{self.branch} {self.job_name}"

    @property
    def is_open(self) -> bool:
        return self.status != FailureStatus.RESOLVED


class FailureOccurrence(models.Model):
    """One CI event that reported this failure."""

    # Stored in the statement that stores the event and opens or locks the failure: no database constraint
    # (see escalation.models.ingestion).
    failure = models.ForeignKey(Failure, on_delete=models.CASCADE, related_name="occurrences", db_constraint=False)
    event = models.OneToOneField(
        "escalation.CIEvent", on_delete=models.CASCADE, related_name="occurrence", db_constraint=False
    )
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
    TYPE_CONFIRMED = "type_confirmed", "Type confirmed"
    RECLASSIFIED = "reclassified", "Reclassified by a rule change"
    REPLACED_BY_JOB = "replaced_by_job", "Run-level failure replaced by its job's"
    PAUSED = "paused", "SLA clock paused"
    RESUMED = "resumed", "SLA clock resumed"
    ESCALATED = "escalated", "Escalation step"
    MARKED_COMPLEX = "marked_complex", "Marked complex"
    PLAN_SET = "plan_set", "Resolution plan set"
    TICKET_OPENED = "ticket_opened", "Ticket opened"


class TimelineEntry(models.Model):
    """One change in a failure's life, in order."""

    # Written with the change it records, on a failure that statement stores or locks (no database constraint).
    failure = models.ForeignKey(Failure, on_delete=models.CASCADE, related_name="timeline", db_constraint=False)
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


class FailureAwaitingTriage(Failure):
    """The QA triage queue: open failures on protected branches whose type nobody has confirmed or corrected."""

    class Meta:
        proxy = True
        verbose_name = "failure awaiting triage"
        verbose_name_plural = "triage queue"
