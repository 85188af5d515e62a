"""Edits of the configuration (matrix, rules, teams, ownership, branch policy): validated, audited, applied.

The admin saves and deletes configuration rows through these two functions, so every edit lands in
the audit log and reaches ingestion at once in this process (other processes follow within
PORTAL_CONFIG_CACHE_SECONDS).
"""

from datetime import datetime

from django.conf import settings
from django.db import models, transaction

from escalation.models import ClassificationRule, Identity
from escalation.services.config import config_changed
from escalation.services.rule_engine import pattern_check
from portal.audit import Actor, audit_record, row_state
from portal.models import AuditAction


def rule_pattern_check(pattern: str) -> None:
    """Refuse a pattern RE2 cannot compile, one that matches empty text, or one too slow on worst-case samples."""
    pattern_check(pattern=pattern, budget_ms=settings.PORTAL_RULE_TRIAL_MS)


def config_object_save(*, obj: models.Model, actor: Actor, now: datetime) -> models.Model:
    if isinstance(obj, ClassificationRule):
        rule_pattern_check(obj.pattern)
    if isinstance(obj, Identity):
        obj.value = obj.value.strip().lower()  # CI payloads are matched lower-cased
    with transaction.atomic():
        before = None
        if obj.pk is not None:
            stored = type(obj).objects.filter(pk=obj.pk).first()
            before = row_state(stored) if stored is not None else None
        obj.full_clean()
        obj.save()
        action = AuditAction.CREATE if before is None else AuditAction.UPDATE
        audit_record(actor=actor, action=action, obj=obj, at=now, before=before, after=row_state(obj))
    config_changed()
    return obj


def config_object_delete(*, obj: models.Model, actor: Actor, now: datetime) -> None:
    with transaction.atomic():
        audit_record(actor=actor, action=AuditAction.DELETE, obj=obj, at=now, before=row_state(obj))
        obj.delete()
    config_changed()
