"""Classification rules, their versions, and the previewed changes that edit them."""

from django.conf import settings
from django.db import models

from escalation.choices import FailureType, RuleChangeKind, RuleChangeStatus, RuleField, RuleStage


def empty_list() -> list:
    return []


class ClassificationRule(models.Model):
    """A pattern on one field of a CI event that gives a failure its type and tags.

    Rules run by stage, then position; the first match wins (see escalation/services/rule_engine.py).
    Every change bumps ``version`` and writes a ClassificationRuleVersion.
    """

    name = models.CharField(max_length=100, unique=True)
    stage = models.PositiveSmallIntegerField(
        choices=RuleStage.choices,
        default=RuleStage.LOG,
        help_text="Precedence: an earlier stage always wins over a later one, whatever the positions",
    )
    position = models.PositiveIntegerField(default=1000, help_text="Order within the stage; lowest first")
    field = models.CharField(max_length=16, choices=RuleField.choices)
    event_field = models.CharField(max_length=64, blank=True, help_text="For field=event_field")
    pattern = models.TextField(
        help_text="RE2 regular expression (no backreferences or look-arounds), case-insensitive; "
        "^ and $ match at line ends"
    )
    failure_type = models.CharField(max_length=32, choices=FailureType.choices)
    tags = models.JSONField(
        default=empty_list, blank=True, help_text="Tags the failure gets, e.g. rate_limited, flaky_suspect"
    )
    is_enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["stage", "position", "id"]

    def __str__(self) -> str:
        return self.name


class ClassificationRuleVersion(models.Model):
    """One version of a rule as it was saved: what it matched, who changed it, through which change."""

    rule = models.ForeignKey(
        ClassificationRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="versions"
    )
    rule_name = models.CharField(max_length=100, help_text="Kept when the rule is deleted")
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=RuleChangeKind.choices)
    state = models.JSONField(help_text="The rule's fields at this version (its last state for a deletion)")
    changed_at = models.DateTimeField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200)
    rule_change = models.ForeignKey(
        "escalation.RuleChange", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "classification rule version"

    def __str__(self) -> str:
        return f"{self.rule_name} v{self.version} ({self.kind})"


class RuleChange(models.Model):
    """A proposed create, edit or deletion of a rule: previewed on recent failures, then applied or discarded."""

    kind = models.CharField(max_length=16, choices=RuleChangeKind.choices)
    rule = models.ForeignKey(
        ClassificationRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="changes"
    )
    rule_name = models.CharField(max_length=100)
    proposed = models.JSONField(help_text="The rule's fields after the change (empty for a deletion)")
    base_version = models.PositiveIntegerField(null=True, blank=True, help_text="The rule's version when proposed")
    base_ruleset = models.BigIntegerField(
        null=True, blank=True, help_text="The newest rule version id when the preview ran; apply refuses if it moved"
    )
    status = models.CharField(max_length=16, choices=RuleChangeStatus.choices, default=RuleChangeStatus.PREVIEWING)
    window_start = models.DateTimeField(help_text="Failures first seen since then are previewed")
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200)
    preview_started_at = models.DateTimeField(null=True, blank=True)
    previewed_at = models.DateTimeField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    affected_count = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    applied_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("apply_rulechange", "Can apply a previewed classification rule change")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_kind_display().lower()} {self.rule_name}"

    @property
    def is_finished(self) -> bool:
        return self.status in (RuleChangeStatus.APPLIED, RuleChangeStatus.DISCARDED)


class RuleChangeEffect(models.Model):
    """One failure whose type or tags a rule change alters, before and after."""

    # No index of its own: one_effect_per_failure_and_change leads with this column.
    change = models.ForeignKey(RuleChange, on_delete=models.CASCADE, related_name="effects", db_index=False)
    failure = models.ForeignKey("escalation.Failure", on_delete=models.CASCADE, related_name="+")
    was_open = models.BooleanField()
    from_type = models.CharField(max_length=32, choices=FailureType.choices)
    from_tags = models.JSONField(default=empty_list)
    from_classified_by = models.CharField(max_length=120)
    to_type = models.CharField(max_length=32, choices=FailureType.choices)
    to_tags = models.JSONField(default=empty_list)
    to_classified_by = models.CharField(max_length=120)
    to_rule = models.ForeignKey(ClassificationRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to_is_changed_rule = models.BooleanField(default=False, help_text="Decided by the rule being changed")
    to_evidence = models.TextField(blank=True)
    found_at_apply = models.BooleanField(default=False, help_text="Opened after the preview ran")
    outcome = models.CharField(max_length=16, blank=True, help_text="applied, skipped; blank until applied")
    outcome_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["change", "failure"], name="one_effect_per_failure_and_change")]

    def __str__(self) -> str:
        return f"failure {self.failure_id}: {self.from_type} -> {self.to_type}"
