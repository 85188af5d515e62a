"""Ingest sources and their bearer tokens (stored hashed, compared in constant time)."""

import hashlib
import hmac
import secrets
from datetime import datetime

from django.db import transaction

from escalation.choices import Scope, SourceKind
from escalation.models import IngestSource
from portal.audit import Actor, audit_record, row_state
from portal.errors import BadInput
from portal.models import AuditAction

TOKEN_PREFIX = "cip"  # noqa: S105 - a marker, not a secret


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def source_create(
    *,
    name: str,
    actor: Actor,
    now: datetime,
    scopes: list[str] | None = None,
    kind: str = SourceKind.GENERIC,
    webhook_secret: str = "",
) -> tuple[IngestSource, str]:
    """Create a source and return it with its token, which is shown this once and stored only hashed.

    A GitHub or GitLab source needs a webhook secret: GitHub signs deliveries with it, GitLab sends it
    as X-Gitlab-Token. It is kept as given (verifying needs it) and never shown or audited.
    """
    if kind in (SourceKind.GITHUB, SourceKind.GITLAB) and not webhook_secret:
        raise BadInput(f"a {kind} source needs --webhook-secret: the secret its webhooks are configured with")
    if webhook_secret and (len(webhook_secret) < 16 or len(webhook_secret) > 255 or not webhook_secret.isprintable()):
        raise BadInput("the webhook secret must be 16 to 255 printable characters")
    scopes = list(scopes) if scopes else list(Scope.values)
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise BadInput(f"unknown scope(s) {', '.join(unknown)}; choose from {', '.join(Scope.values)}")
    if not name.strip():
        raise BadInput("a source needs a name")
    if IngestSource.objects.filter(name=name).exists():
        raise BadInput(f"a source named {name!r} already exists")
    prefix = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        source = IngestSource.objects.create(
            name=name,
            kind=kind,
            token_prefix=prefix,
            token_hash=_hash(token),
            scopes=scopes,
            webhook_secret=webhook_secret,
        )
        audit_record(actor=actor, action=AuditAction.CREATE, obj=source, at=now, after=row_state(source))
    return source, token


def source_authenticate(token: str) -> IngestSource | None:
    """The active source this token belongs to, or None."""
    parts = token.split("_", 2)  # the secret part is urlsafe base64, which may itself contain "_"
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    source = IngestSource.objects.filter(token_prefix=parts[1], is_active=True).first()
    if source is None or not hmac.compare_digest(source.token_hash, _hash(token)):
        return None
    return source
