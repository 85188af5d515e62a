"""Project-wide records: the audit log."""

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models

from escalation.choices import ChangeSource


class AuditAction(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"


class AuditEntry(models.Model):
    """One change made through the service layer: who, from where, to what, before and after.

    Append-only: rows are written by ``portal.audit`` and never updated or deleted.
    """

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200, help_text="User name, ingest source or task")
    source = models.CharField(max_length=16, choices=ChangeSource.choices)
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    # No index of its own: audit_object_idx leads with this column. No database constraint: content types
    # are rows Django itself keeps, and every ingested event writes an entry (a check, a query and a row
    # lock on the same hot row each time).
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, db_index=False, db_constraint=False)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=300)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["content_type", "object_id"], name="audit_object_idx")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.object_repr}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("audit entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit entries are append-only")
