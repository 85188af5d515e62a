"""The audit log: every change made through the service layer is written here."""

import functools
import json
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from escalation.choices import ChangeSource
from portal.json_text import json_text
from portal.models import AuditAction, AuditEntry


@dataclass(frozen=True)
class Actor:
    """Who made a change and through what: a user, an ingest source, a task or a management command."""

    label: str
    source: ChangeSource
    user: AbstractBaseUser | None = None

    @classmethod
    def of_user(cls, user: AbstractBaseUser, source: ChangeSource) -> "Actor":
        return cls(label=user.get_username(), source=source, user=user)

    @classmethod
    def of_source(cls, ingest_source: Any) -> "Actor":
        return cls(label=f"source:{ingest_source.name}", source=ChangeSource.API)

    @classmethod
    def task(cls, name: str) -> "Actor":
        return cls(label=f"task:{name}", source=ChangeSource.TASK)

    @classmethod
    def command(cls, name: str) -> "Actor":
        return cls(label=f"command:{name}", source=ChangeSource.COMMAND)


# Never copied into the audit log, which every role can read: token hashes, webhook secrets, the
# signing secrets of notification channels and the API tokens of ticket trackers.
SECRET_FIELDS = frozenset({"token_hash", "webhook_secret", "secret", "token"})


def row_state(obj: models.Model) -> dict[str, Any]:
    """A JSON-safe dict of a row's concrete fields, for before/after.

    What ``json.loads(json.dumps(model_to_dict(obj), cls=DjangoJSONEncoder))`` gives, without the round
    trip for the values JSON keeps as they are: ingestion writes one per failure it opens.
    """
    names, values = _state_fields(type(obj))
    return {
        name: value if type(value) in _AS_THEY_ARE else _json_safe(value)
        for name, value in zip(names, values(obj), strict=True)
    }


def row_state_json(obj: models.Model) -> str:
    """``row_state(obj)`` as JSON text, encoded in one pass: for bulk inserts, which would encode the dict again."""
    names, values = _state_fields(type(obj))
    return json_text(dict(zip(names, values(obj), strict=True)), default=_ENCODER.default, datetimes_by_default=True)


@functools.cache
def _state_fields(model: type[models.Model]) -> tuple[tuple[str, ...], Callable[[models.Model], tuple]]:
    """The names of the fields model_to_dict reads (concrete and editable) less the secrets, and a function
    that reads their values in one go; once per model."""
    fields = [f for f in model._meta.concrete_fields if getattr(f, "editable", False) and f.name not in SECRET_FIELDS]
    names = tuple(f.name for f in fields)
    if len(fields) > 1 and all(type(f).value_from_object is models.Field.value_from_object for f in fields):
        return names, operator.attrgetter(*(f.attname for f in fields))  # value_from_object is getattr of the attname
    return names, lambda obj: tuple(f.value_from_object(obj) for f in fields)


_ENCODER = DjangoJSONEncoder()


_AS_THEY_ARE = frozenset({str, int, bool, float, type(None)})


def _json_safe(value: Any) -> Any:
    """The value after a JSON round trip with DjangoJSONEncoder."""
    kind = type(value)
    if kind in _AS_THEY_ARE:
        return value
    if kind is datetime:
        return _ENCODER.default(value)
    if kind is list:
        return [_json_safe(item) for item in value]
    if kind is dict and all(type(key) is str for key in value):
        return {key: _json_safe(item) for key, item in value.items()}
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))  # tuples, enums, dates, decimals, odd keys


def audit_record(
    *,
    actor: Actor,
    action: AuditAction,
    obj: models.Model,
    at: datetime,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
) -> AuditEntry:
    entry = audit_entry(actor=actor, action=action, obj=obj, at=at, before=before, after=after, reason=reason)
    entry.save()
    return entry


def audit_bulk(
    *,
    actor: Actor,
    action: AuditAction,
    changes: Iterable[tuple[models.Model, dict | None, dict | None]],
    at: datetime,
    reason: str = "",
) -> list[AuditEntry]:
    """One entry per changed row of a bulk change, written in one insert."""
    entries = [
        audit_entry(actor=actor, action=action, obj=obj, at=at, before=before, after=after, reason=reason)
        for obj, before, after in changes
    ]
    return AuditEntry.objects.bulk_create(entries)


def audit_entry(
    *,
    actor: Actor,
    action: AuditAction,
    obj: models.Model,
    at: datetime,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
) -> AuditEntry:
    """The entry for one change, not yet saved: for callers that store it within a statement of their own."""
    return AuditEntry(
        **audit_values(actor=actor, action=action, obj=obj, at=at, before=before, after=after, reason=reason)
    )


def audit_values(
    *,
    actor: Actor,
    action: AuditAction,
    obj: models.Model,
    at: datetime,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """The entry for one change as column values by attribute name: for callers that store many with
    ``insert_values`` instead of building an AuditEntry each."""
    return {
        "actor_id": None if actor.user is None else actor.user.pk,
        "content_type_id": ContentType.objects.get_for_model(obj).pk,
        "at": at,
        "actor_label": actor.label[:200],
        "source": actor.source,
        "action": action,
        "object_id": str(obj.pk),
        "object_repr": str(obj)[:300],
        "before": before,
        "after": after,
        "reason": reason[:300],
    }
