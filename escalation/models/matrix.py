"""The escalation matrix: one row per failure type."""

from django.db import models

from escalation.choices import Calendar, FailureType, OverridePolicy, Owner, RetryCondition, Role, Tier


class MatrixRow(models.Model):
    """What happens to a failure of one type: owners, SLA, tier, override and retry policy.

    A failure copies its row (``snapshot()``) when it opens, so later edits change new failures only.
    """

    failure_type = models.CharField(max_length=32, choices=FailureType.choices, unique=True)
    comes_from = models.CharField(max_length=200, blank=True)
    primary_owner = models.CharField(max_length=32, choices=Owner.choices)
    secondary_owner = models.CharField(max_length=32, choices=Owner.choices)
    sla_budget = models.DurationField()
    complex_sla_budget = models.DurationField(null=True, blank=True, help_text="When marked complex")
    acknowledge_budget = models.DurationField(null=True, blank=True, help_text="Acknowledged within")
    calendar = models.CharField(max_length=16, choices=Calendar.choices, default=Calendar.ALWAYS)
    tier = models.CharField(max_length=16, choices=Tier.choices)
    raised_tier = models.CharField(max_length=16, choices=Tier.choices, blank=True)
    raised_tier_above_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Use the raised tier when the regression exceeds this percentage"
    )
    override_policy = models.CharField(max_length=16, choices=OverridePolicy.choices)
    override_conditions = models.CharField(max_length=200, blank=True)
    override_threshold_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    approver_role = models.CharField(max_length=32, choices=Role.choices, blank=True)
    retries = models.PositiveSmallIntegerField(
        default=0, help_text="Retries CI may make after the first run; 0 = never"
    )
    retry_backoff_seconds = models.PositiveIntegerField(default=0, help_text="First retry delay; doubles each attempt")
    retry_condition = models.CharField(max_length=32, choices=RetryCondition.choices, default=RetryCondition.NONE)
    opens_rotation_task = models.BooleanField(default=False)

    class Meta:
        ordering = ["failure_type"]
        verbose_name = "matrix row"

    def __str__(self) -> str:
        return self.get_failure_type_display()
