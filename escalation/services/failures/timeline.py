"""A failure's timeline entries, as the failure services write them."""

from datetime import datetime

from escalation.models import Failure, TimelineEntry
from portal.audit import Actor


def _timeline(failure: Failure, at: datetime, kind: str, actor: Actor, message: str, data: dict | None = None) -> None:
    _timeline_entry(failure, at, kind, actor, message, data).save()


def _timeline_entry(
    failure: Failure, at: datetime, kind: str, actor: Actor, message: str, data: dict | None = None
) -> TimelineEntry:
    return TimelineEntry(
        failure=failure,
        at=at,
        kind=kind,
        actor=actor.label,
        source=actor.source,
        message=message,
        data=data or {},
    )


def _timeline_many(failures: list[Failure], at: datetime, kind: str, actor: Actor, message: str) -> None:
    TimelineEntry.objects.bulk_create(
        TimelineEntry(failure=f, at=at, kind=kind, actor=actor.label, source=actor.source, message=message)
        for f in failures
    )
