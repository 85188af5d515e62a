"""The outbox: notifications are written with their cause and delivered later, at least once."""

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.urls import reverse

from escalation.models import Failure, Notification, NotificationChannel, TicketTracker


@dataclass
class Message:
    """One message to one target (a channel or a ticket tracker) about one or more failures."""

    subject: str
    body: str
    data: dict
    failure_ids: list[int]
    step: str = ""
    channel: NotificationChannel | None = None
    tracker: TicketTracker | None = None
    dedupe_key: str | None = None
    extra: dict = field(default_factory=dict)


def failure_url(failure_id: int) -> str:
    """The failure's page: every message links to it."""
    return settings.PORTAL_BASE_URL + reverse("admin:escalation_failure_change", args=[failure_id])


def failure_summary(failure: Failure, *, teams: dict[int, str]) -> dict:
    """What a message says of one failure; transports render it (Slack blocks, ticket bodies, e-mail)."""
    return {
        "id": failure.pk,
        "type": failure.failure_type,
        "repository": failure.repository.name,
        "branch": failure.branch,
        "job": failure.job_name,
        "owner": teams.get(failure.owner_team_id, "nobody"),
        "secondary": teams.get(failure.secondary_team_id, ""),
        "status": failure.status,
        "opened_at": failure.first_seen_at.isoformat(),
        "sla_due_at": failure.sla_due_at.isoformat() if failure.sla_due_at else None,
        "breached_at": failure.breached_at.isoformat() if failure.breached_at else None,
        "signature": failure.signature,
        "url": failure_url(failure.pk),
    }


def notifications_write(messages: list[Message], *, now: datetime) -> list[Notification]:
    """Insert outbox rows in the caller's transaction; a message whose dedupe key exists already is dropped.

    The caller holds the lock that makes the key check safe: the claimed failure for a failure's key,
    the group row for a group's. The unique index is the backstop. Returns the rows inserted.
    """
    if not messages:
        return []
    pairs = [
        (
            Notification(
                channel=message.channel,
                tracker=message.tracker,
                step=message.step,
                subject=message.subject[:300],
                body=message.body,
                data=message.data,
                dedupe_key=message.dedupe_key,
                next_attempt_at=now,
                created_at=now,
            ),
            message,
        )
        for message in messages
    ]
    keys = [m.dedupe_key for m in messages if m.dedupe_key]
    taken = set(Notification.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True))
    inserted = [(row, m) for row, m in pairs if m.dedupe_key is None or m.dedupe_key not in taken]
    Notification.objects.bulk_create([row for row, _ in inserted], batch_size=1000)
    through = Notification.failures.through
    links = [
        through(notification_id=row.pk, failure_id=failure_id) for row, m in inserted for failure_id in m.failure_ids
    ]
    through.objects.bulk_create(links, batch_size=2000)
    return [row for row, _ in inserted]
