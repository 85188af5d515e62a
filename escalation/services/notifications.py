"""The outbox: notifications are written with their cause and delivered later, at least once."""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.urls import reverse

from escalation.choices import NotificationStatus
from escalation.models import Failure, Notification, NotificationChannel, TicketTracker

logger = logging.getLogger(__name__)


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


def message_text(step_label: str, failures: list[dict]) -> tuple[str, str]:
    """The subject and plain-text body of a message about these failures (their failure_summary)."""
    first, count = failures[0], len(failures)
    what = f"{first['type']} in {first['repository']} ({first['branch']}): {first['job']}"
    more = f" and {count - 1} more with the same cause" if count > 1 else ""
    subject = f"[{step_label}] {what}{more}"
    lines = [subject, ""]
    for item in failures:
        due = f", SLA due {item['sla_due_at']}" if item["sla_due_at"] else ""
        lines.append(f"- #{item['id']} {item['type']} {item['repository']}:{item['branch']} {item['job']}")
        lines.append(f"  owner {item['owner']}{due}: {item['url']}")
    return subject[:300], "\n".join(lines)


def notifications_write(messages: list[Message], *, now: datetime) -> list[Notification]:
    """Insert outbox rows in the caller's transaction, one per dedupe key; returns the rows inserted.

    A message whose key exists already adds its failures to that row: to its text while nobody has
    tried to send it (the row is locked here, so delivery cannot start meanwhile), else only to its
    record, since the target was told of the group already. The caller holds the lock that makes the
    key check safe (the claimed failure for a failure's key, the group's advisory lock for a group's);
    the unique index is the backstop.
    """
    if not messages:
        return []
    keys = [m.dedupe_key for m in messages if m.dedupe_key]
    taken = {
        row.dedupe_key: row
        for row in Notification.objects.select_for_update(of=("self",)).filter(dedupe_key__in=keys).order_by("id")
    }
    inserted = [
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
        if message.dedupe_key not in taken
    ]
    Notification.objects.bulk_create([row for row, _ in inserted], batch_size=1000)
    through = Notification.failures.through
    links = [through(notification_id=row.pk, failure_id=i) for row, m in inserted for i in m.failure_ids]
    merged = []
    for message in messages:
        row = taken.get(message.dedupe_key)
        if row is None:
            continue
        listed = {item["id"] for item in row.data.get("failures", [])}
        added = [item for item in message.data.get("failures", []) if item["id"] not in listed]
        links.extend(through(notification_id=row.pk, failure_id=item["id"]) for item in added)
        if added and row.status == NotificationStatus.PENDING and row.attempts == 0:
            row.data["failures"] = row.data.get("failures", []) + added
            row.subject, row.body = message_text(row.data.get("step_label", row.step), row.data["failures"])
            row.data["title"] = row.subject
            merged.append(row)
    Notification.objects.bulk_update(merged, ["data", "subject", "body"])
    through.objects.bulk_create(links, batch_size=2000, ignore_conflicts=True)
    return [row for row, _ in inserted]
