"""Classification rules: ordered patterns that give a failure its type."""

from django.db import models

from escalation.choices import FailureType, RuleField


class ClassificationRule(models.Model):
    """A regular expression on one field of a CI event; the first matching rule by position wins."""

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=1000)
    field = models.CharField(max_length=16, choices=RuleField.choices)
    event_field = models.CharField(max_length=64, blank=True, help_text="For field=event_field")
    pattern = models.TextField(help_text="Python regular expression, matched case-insensitively")
    failure_type = models.CharField(max_length=32, choices=FailureType.choices)
    is_enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name
