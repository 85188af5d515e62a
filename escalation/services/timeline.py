"""A failure's timeline entries: how every service that changes a failure records it."""

from datetime import datetime
from typing import Any

from escalation.models import Failure, TimelineEntry
from portal.audit import Actor


def timeline_entry(
    failure: Failure, at: datetime, kind: str, actor: Actor, message: str, data: dict | None = None
) -> TimelineEntry:
    """An unsaved entry; callers writing many insert them together."""
    return TimelineEntry(failure=failure, **timeline_fields(at, kind, actor, message, data))


def timeline_fields(at: datetime, kind: str, actor: Actor, message: str, data: dict | None = None) -> dict[str, Any]:
    """An entry's values but its failure, by attribute name: for callers that store many with ``insert_values``."""
    return {
        "at": at,
        "kind": kind,
        "actor": actor.label,
        "source": actor.source,
        "message": message,
        "data": data or {},
    }


def timeline_add(
    failure: Failure, at: datetime, kind: str, actor: Actor, message: str, data: dict | None = None
) -> None:
    timeline_entry(failure, at, kind, actor, message, data).save()


def timeline_add_many(failures: list[Failure], at: datetime, kind: str, actor: Actor, message: str) -> None:
    TimelineEntry.objects.bulk_create(timeline_entry(f, at, kind, actor, message) for f in failures)
