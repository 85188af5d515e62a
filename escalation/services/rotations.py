"""Credential rotation: the task a detected secret opens. Confirming it is the only way the secret's
failure resolves; a later clean scan never does (the secret is in the history either way)."""

from datetime import datetime

from django.db import transaction

from escalation.choices import Resolution, RotationStatus
from escalation.exceptions import RotationNotOpen
from escalation.models import CredentialRotation, Failure
from escalation.models.failures import OPEN_Q
from escalation.services.failures import failures_resolve, require_permission
from portal.audit import Actor, audit_record, row_state
from portal.models import AuditAction


def rotation_confirm(*, rotation_id: int, actor: Actor, now: datetime, note: str = "") -> CredentialRotation:
    """The credential was rotated: close the task and resolve its failure as fixed."""
    require_permission(actor, "escalation.resolve_failure")
    with transaction.atomic():
        rotation = CredentialRotation.objects.select_for_update().get(pk=rotation_id)
        if rotation.status != RotationStatus.OPEN:
            raise RotationNotOpen(f"the rotation for failure {rotation.failure_id} is already confirmed")
        before = row_state(rotation)
        rotation.status = RotationStatus.CONFIRMED
        rotation.confirmed_at = now
        rotation.confirmed_by = actor.user
        rotation.note = note
        rotation.save()
        audit_record(
            actor=actor, action=AuditAction.UPDATE, obj=rotation, at=now, before=before, after=row_state(rotation)
        )
        if Failure.objects.filter(OPEN_Q, pk=rotation.failure_id).exists():
            failures_resolve(
                failure_ids=[rotation.failure_id],
                resolution=Resolution.FIXED,
                actor=actor,
                now=now,
                note=f"credential rotated. {note}".strip(),
            )
    return rotation
