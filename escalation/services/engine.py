"""The engine's schedules and its health: what django-q2 runs when, and when each part last ran.

SCHEDULES is the one list of scheduled work. ``schedules_ensure`` runs after every ``migrate`` (see
``EscalationConfig.ready``) and creates or updates one django-q2 Schedule per entry, matched by name,
so the worker's scheduler finds them and a changed interval here reaches the row on the next migrate.
"""

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from escalation.models import EngineBeat
from escalation.services import escalation as ladder
from escalation.services import notifications
from escalation.services.escalation import SweepResult

HEARTBEAT = "worker"
SWEEP = "sla_sweep"


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    func: str
    schedule_type: str  # django_q.models.Schedule.TYPE: "I" every `minutes`, "D" daily, "W" weekly, ...
    minutes: int | None = None


SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec("sla-sweep", "escalation.tasks.sla_sweep", "I", 1),
    ScheduleSpec("notifications-deliver", "escalation.tasks.notifications_deliver", "I", 1),
    ScheduleSpec("engine-heartbeat", "escalation.tasks.engine_heartbeat", "I", 1),
    ScheduleSpec("digests", "escalation.tasks.digests_send_due", "I", 5),
    ScheduleSpec("detect-patterns", "escalation.tasks.detect_patterns", "I", 15),
)


def schedules_ensure(*, using: str = DEFAULT_DB_ALIAS) -> int:
    """Create or update the django-q2 schedule of every SCHEDULES entry; returns how many there are.

    Idempotent: rows are matched by name (copies of a name are removed), so re-running changes
    nothing unless the code changed. Schedules not in SCHEDULES are left alone.
    Does nothing while django-q2's table is missing (a partial ``migrate``).
    """
    from django_q.models import Schedule

    if Schedule._meta.db_table not in connections[using].introspection.table_names():
        return 0
    for spec in SCHEDULES:
        # Schedule.name is not unique: a copy made by hand in the admin would otherwise run the task twice.
        extra = Schedule.objects.using(using).filter(name=spec.name).order_by("id").values_list("id", flat=True)[1:]
        Schedule.objects.using(using).filter(id__in=list(extra)).delete()
        Schedule.objects.using(using).update_or_create(
            name=spec.name,
            defaults={"func": spec.func, "schedule_type": spec.schedule_type, "minutes": spec.minutes, "repeats": -1},
        )
    return len(SCHEDULES)


def engine_beat(name: str, now: datetime, detail: str = "") -> EngineBeat:
    """Record that a part of the engine ran at ``now``: one row per name, overwritten each time."""
    field = EngineBeat._meta.get_field("detail")
    beat = EngineBeat(name=name, at=now, detail=detail[: field.max_length])
    EngineBeat.objects.bulk_create(
        [beat], update_conflicts=True, unique_fields=["name"], update_fields=["at", "detail"]
    )
    return beat


def engine_sla_sweep(*, now: datetime) -> SweepResult:
    """Run one SLA sweep at ``now`` and record it as the engine's last sweep, with its summary."""
    result = ladder.sla_sweep(now=now)
    engine_beat(SWEEP, now, result.summary())
    return result


def engine_sweep_loop(
    *,
    seconds: float,
    interval: float,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
    timer: Callable[[], float] = time.monotonic,
) -> str:
    """Sweep and deliver what the sweep queued, again every ``interval`` seconds for ``seconds``.

    The scheduled task runs once a minute; looping inside it takes a step seconds after it is due
    rather than up to a minute later. Each sweep is its own transactions and claims skip-locked, so a
    loop killed half way, or overlapping the next one, takes no step twice.
    """
    started = timer()
    totals: list[str] = []
    while True:
        swept = engine_sla_sweep(now=clock())
        summary = swept.summary()
        if swept.notifications:
            summary += "; " + notifications.notifications_deliver(now=clock()).summary()
        if swept.claimed or not totals:
            totals.append(summary)
        if timer() - started + interval > seconds:
            return " | ".join(totals[-3:])
        sleep(interval)


def engine_heartbeat(*, now: datetime) -> EngineBeat:
    """Record that a worker is alive and runs scheduled tasks."""
    return engine_beat(HEARTBEAT, now, f"pid {os.getpid()} on {socket.gethostname()}")


def beat_stale_after(name: str) -> int | None:
    """Seconds after which a beat of this name is stale; None for a beat nobody watches."""
    return {
        HEARTBEAT: settings.PORTAL_ENGINE_HEARTBEAT_STALE_SECONDS,
        SWEEP: settings.PORTAL_ENGINE_SWEEP_STALE_SECONDS,
    }.get(name)


def beat_age(beat: EngineBeat, now: datetime) -> int:
    return max(0, int((now - beat.at).total_seconds()))


def beat_is_stale(beat: EngineBeat, now: datetime) -> bool | None:
    stale_after = beat_stale_after(beat.name)
    return None if stale_after is None else beat_age(beat, now) > stale_after


def _beat_state(name: str, beat: EngineBeat | None, now: datetime) -> dict:
    stale_after = beat_stale_after(name)
    if beat is None:
        return {"at": None, "age_seconds": None, "detail": "", "stale": True, "stale_after_seconds": stale_after}
    return {
        "at": beat.at.isoformat(),
        "age_seconds": beat_age(beat, now),
        "detail": beat.detail,
        "stale": beat_is_stale(beat, now),
        "stale_after_seconds": stale_after,
    }


def engine_state(now: datetime) -> dict:
    """The worker's last heartbeat and the last SLA sweep, their ages, and whether either is stale or missing."""
    beats = {beat.name: beat for beat in EngineBeat.objects.filter(name__in=[HEARTBEAT, SWEEP])}
    worker = _beat_state(HEARTBEAT, beats.get(HEARTBEAT), now)
    sweep = _beat_state(SWEEP, beats.get(SWEEP), now)
    stale = worker["stale"] or sweep["stale"]
    return {"status": "stale" if stale else "ok", "stale": stale, "worker": worker, "sla_sweep": sweep}
