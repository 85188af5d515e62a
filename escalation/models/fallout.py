"""Learning from patterns: fallout rules, the fallouts they open or propose, retry advice, digests."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from escalation.choices import DigestKind, FailureType, FalloutCategory, FalloutScope, FalloutStatus, Role

FALLOUT_OPEN_Q = Q(status__in=[FalloutStatus.PROPOSED, FalloutStatus.OPEN])


class FalloutRule(models.Model):
    """One row of DESIGN.md's fallout table. ``code`` names the detector function that reads the pattern;
    the thresholds, the window and the scope are data, edited in the admin."""

    code = models.SlugField(max_length=64, unique=True, help_text="The detector that reads this pattern")
    name = models.CharField(max_length=100)
    pattern = models.CharField(max_length=300, help_text="The pattern in words, as the admin shows it")
    category = models.CharField(max_length=16, choices=FalloutCategory.choices)
    owner_roles = models.JSONField(
        default=list, help_text="Roles whose teams own the follow-up; the first one's tracker gets the ticket"
    )
    threshold = models.PositiveIntegerField(help_text="Triggers needed within the window")
    window = models.DurationField(help_text="How far back triggers count")
    scope = models.CharField(max_length=16, choices=FalloutScope.choices, default=FalloutScope.GLOBAL)
    ratio_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Flaky test: failure share; build performance: excess over the baseline"
    )
    min_samples = models.PositiveIntegerField(
        null=True, blank=True, help_text="Flaky test: runs needed for the share; build performance: baseline builds"
    )
    is_enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Fallout(models.Model):
    """Follow-up work a pattern asked for: one open (or proposed) per rule and scope, listing its triggers."""

    rule = models.ForeignKey(FalloutRule, on_delete=models.PROTECT, related_name="fallouts")
    category = models.CharField(max_length=16, choices=FalloutCategory.choices)
    scope_key = models.CharField(max_length=300, help_text="The value the triggers share, e.g. a runner label")
    title = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True, help_text="The figures that met the threshold")
    status = models.CharField(max_length=16, choices=FalloutStatus.choices)
    failures = models.ManyToManyField("escalation.Failure", blank=True, related_name="fallouts")
    owner_team = models.ForeignKey(
        "escalation.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="fallouts"
    )
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision_reason = models.TextField(blank=True)
    ticket_key = models.CharField(max_length=100, blank=True)
    ticket_url = models.URLField(max_length=500, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "scope_key"], condition=FALLOUT_OPEN_Q, name="one_open_fallout"),
        ]
        permissions = [("decide_fallout", "Can confirm or dismiss a proposed fallout")]

    def __str__(self) -> str:
        return f"{self.rule}: {self.scope_key} ({self.status})"


class RetryAdvice(models.Model):
    """One answer to CI's "should I retry this job?", kept with what it was asked."""

    source = models.ForeignKey("escalation.IngestSource", on_delete=models.PROTECT, related_name="+")
    failure = models.ForeignKey(
        "escalation.Failure", null=True, blank=True, on_delete=models.SET_NULL, related_name="retry_advice"
    )
    repository = models.CharField(max_length=255)
    branch = models.CharField(max_length=255, blank=True)
    run_id = models.CharField(max_length=200, blank=True)
    job_name = models.CharField(max_length=255)
    failure_type = models.CharField(max_length=32, choices=FailureType.choices)
    classified_by = models.CharField(max_length=120, help_text="'failure_type' when given, else the rule's name")
    attempt = models.PositiveIntegerField()
    other_jobs = models.JSONField(default=list, blank=True)
    retry = models.BooleanField()
    delay_seconds = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=0)
    reason = models.CharField(max_length=300)
    asked_at = models.DateTimeField()
    idempotency_key = models.CharField(
        max_length=255, blank=True, help_text="The Idempotency-Key header: the same key answers this advice again"
    )

    class Meta:
        ordering = ["-asked_at", "-id"]
        verbose_name_plural = "retry advice"
        constraints = [
            # A repeated Idempotency-Key from one source answers the stored advice; concurrent repeats meet here.
            models.UniqueConstraint(
                fields=["source", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="retry_advice_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_name} attempt {self.attempt}: {'retry' if self.retry else 'no retry'}"


class Digest(models.Model):
    """One digest or report as sent: its figures, its text and HTML. One per kind, audience and period."""

    kind = models.CharField(max_length=16, choices=DigestKind.choices)
    audience = models.CharField(max_length=64, help_text="team:<id>, or the role it is for, e.g. scrum_master")
    team = models.ForeignKey("escalation.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=32, choices=Role.choices, blank=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    subject = models.CharField(max_length=300)
    figures = models.JSONField(default=dict)
    text = models.TextField()
    html = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "audience", "period_start"], name="digest_once_per_period")
        ]

    def __str__(self) -> str:
        return self.subject
