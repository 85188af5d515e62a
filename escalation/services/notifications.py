"""The outbox: notifications are written with their cause and delivered later, at least once."""

import functools
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Min, Q, QuerySet
from django.urls import reverse

from escalation.choices import NotificationStatus
from escalation.models import (
    Failure,
    Fallout,
    Notification,
    NotificationChannel,
    TicketTracker,
    TimelineEntry,
    TimelineKind,
)
from escalation.services.statements import insert_values
from escalation.services.timeline import timeline_entry
from escalation.transports import TransportError, transport_for
from portal.audit import Actor, audit_bulk, audit_record, row_state
from portal.models import AuditAction

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
    fallout_id: int | None = None
    digest_id: int | None = None
    extra: dict = field(default_factory=dict)


def admin_url(model: str, pk: int) -> str:
    """The admin page of one row (a failure, a fallout, a digest): where messages link to."""
    return settings.PORTAL_BASE_URL + _change_path(model).replace("/0/", f"/{int(pk)}/")


@functools.cache
def _change_path(model: str) -> str:
    return reverse(f"admin:escalation_{model}_change", args=[0])  # resolved once: a sweep links thousands


def failure_url(failure_id: int) -> str:
    """The failure's page: every message links to it."""
    return admin_url("failure", failure_id)


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


def notifications_write(messages: list[Message], *, now: datetime) -> list[int]:
    """Insert outbox rows in the caller's transaction, one per dedupe key; returns the ids inserted.

    A message whose key exists already adds its failures to that row: to its text while nobody has
    tried to send it (the row is locked here, so delivery cannot start meanwhile), else only to its
    record, since the target was told of the group already. The caller holds the lock that makes the
    key check safe (the claimed failure for a failure's key, the group's advisory lock for a group's);
    the unique index is the backstop. Rows are written from tuples: a sweep writes thousands.
    """
    if not messages:
        return []
    keys = [m.dedupe_key for m in messages if m.dedupe_key]
    locked = Notification.objects.select_for_update(of=("self",)).filter(dedupe_key__in_array=keys).order_by("id")
    taken = {row.dedupe_key: row for row in locked} if keys else {}
    fresh = [message for message in messages if message.dedupe_key not in taken]
    pending = NotificationStatus.PENDING
    rows = [
        (
            uuid.uuid4(), m.channel.pk if m.channel else None, m.tracker.pk if m.tracker else None, m.fallout_id,
            m.digest_id, m.step, m.subject[:300], m.body, m.data, m.dedupe_key, pending, 0, now, "", now,
        )
        for m in fresh
    ]  # fmt: skip
    ids = insert_values(Notification, _OUTBOX_COLUMNS, rows, keys_needed=True)
    through = Notification.failures.through
    links = [(pk, failure_id) for pk, m in zip(ids, fresh, strict=True) for failure_id in m.failure_ids]
    merged = []
    for message in messages:
        row = taken.get(message.dedupe_key)
        if row is None:
            continue
        listed = {item["id"] for item in row.data.get("failures", [])}
        added = [item for item in message.data.get("failures", []) if item["id"] not in listed]
        links.extend((row.pk, item["id"]) for item in added)
        if added and row.status == NotificationStatus.PENDING and row.attempts == 0:
            row.data["failures"] = row.data.get("failures", []) + added
            row.subject, row.body = message_text(row.data.get("step_label", row.step), row.data["failures"])
            row.data["title"] = row.subject
            merged.append(row)
    Notification.objects.bulk_update(merged, ["data", "subject", "body"])
    insert_values(through, ["notification_id", "failure_id"], links)
    return ids


_OUTBOX_COLUMNS = [
    *("uid", "channel_id", "tracker_id", "fallout_id", "digest_id", "step", "subject", "body", "data"),
    *("dedupe_key", "status", "attempts", "next_attempt_at", "last_error", "created_at"),
]


# --- delivery: claim due entries, send each outside any transaction, record the outcome ---

LEASE = timedelta(minutes=5)  # a claimed entry is retried after this when its worker dies mid-send
CLAIM_CHUNK = 10  # entries claimed at once: ten slow sends (2 x PORTAL_HTTP_TIMEOUT each) fit well in the lease
RATE_WINDOW = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)
BATCH_MAX = 500  # entries merged into one batch message at most; the rest wait for the next window
_ACTOR = Actor.task("notifications_deliver")


@dataclass
class DeliveryResult:
    """What one delivery pass did, counted per entry (``disabled`` counts targets)."""

    claimed: int = 0
    delivered: int = 0
    batched: int = 0
    retrying: int = 0
    dead: int = 0
    deferred: int = 0
    disabled: int = 0
    skipped: int = 0

    def summary(self) -> str:
        return (
            f"{self.claimed} notifications claimed, {self.delivered} delivered, {self.batched} batched, "
            f"{self.retrying} to retry, {self.dead} dead, {self.deferred} deferred by rate limits, "
            f"{self.disabled} targets disabled, {self.skipped} tickets skipped (already open)"
        )


def notification_backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try: PORTAL_NOTIFY_BACKOFF_SECONDS doubling, capped at 1 h."""
    seconds = settings.PORTAL_NOTIFY_BACKOFF_SECONDS * 2 ** min(max(attempts - 1, 0), 20)
    return min(timedelta(seconds=seconds), BACKOFF_CAP)


def notifications_due(*, now: datetime) -> QuerySet[Notification]:
    """Pending entries whose next attempt has come, for an enabled channel or tracker."""
    return Notification.objects.filter(status=NotificationStatus.PENDING, next_attempt_at__lte=now).filter(
        Q(channel__in=NotificationChannel.objects.filter(is_enabled=True))
        | Q(tracker__in=TicketTracker.objects.filter(is_enabled=True))
    )


def notifications_deliver(*, now: datetime, limit: int = 200) -> DeliveryResult:
    """One delivery pass, at least once per entry, never a transaction open during a send.

    1. Claim a chunk of due entries (SKIP LOCKED): each gets one more attempt and a lease on its
       next attempt, so a worker killed mid-send leaves it to be retried when the lease ends.
    2. Per channel, keep within its rate limit: send up to the limit minus one alone and merge the
       rest of its due entries into one batch entry, claimed with them.
    3. Send each claimed entry and record the outcome: delivered, retry with backoff, or dead (a
       permanent error also disables the target, whose entries then wait until it is enabled).
    """
    result = DeliveryResult()
    seen = 0
    while seen < limit:
        found, ids = _claim(now=now, size=min(CLAIM_CHUNK, limit - seen), result=result)
        if not found:
            break
        seen += found
        result.claimed += len(ids)
        rows = Notification.objects.filter(pk__in=ids).select_related("channel", "tracker").order_by("id")
        for notification in rows:
            _deliver_one(notification, now=now, result=result)
    return result


def _claim(*, now: datetime, size: int, result: DeliveryResult) -> tuple[int, list[int]]:
    """How many due entries were found, and the ids to send (rate-limited ones are deferred or batched)."""
    with transaction.atomic():
        rows = list(
            notifications_due(now=now).select_for_update(skip_locked=True).order_by("next_attempt_at", "id")[:size]
        )
        ids = _rate_limit(rows, now=now, result=result)
        Notification.objects.filter(pk__in=ids).update(attempts=F("attempts") + 1, next_attempt_at=now + LEASE)
    return len(rows), ids


def _rate_limit(rows: list[Notification], *, now: datetime, result: DeliveryResult) -> list[int]:
    """The ids to send now: tracker entries, channel entries within their limit, and one batch per busy channel."""
    keep = [row.pk for row in rows if row.channel_id is None]
    channel_ids = {row.channel_id for row in rows if row.channel_id is not None}
    limits = dict(NotificationChannel.objects.filter(pk__in=channel_ids).values_list("pk", "rate_limit_per_minute"))
    recent = {
        entry["channel_id"]: entry
        for entry in Notification.objects.filter(
            channel_id__in=channel_ids, status=NotificationStatus.DELIVERED, delivered_at__gt=now - RATE_WINDOW
        )
        .values("channel_id")
        .annotate(sent=Count("id"), oldest=Min("delivered_at"))
    }
    for channel_id in sorted(channel_ids):
        mine = [row.pk for row in rows if row.channel_id == channel_id]
        if not limits[channel_id]:  # 0: no limit
            keep += mine
            continue
        sent = recent.get(channel_id, {"sent": 0, "oldest": now})
        available = limits[channel_id] - sent["sent"]
        due = notifications_due(now=now).filter(channel_id=channel_id)
        if due.count() <= available:
            keep += mine
        elif available <= 0:  # the window is full: wait until its oldest message leaves it
            Notification.objects.filter(pk__in=mine).update(next_attempt_at=sent["oldest"] + RATE_WINDOW)
            result.deferred += len(mine)
        else:
            alone = mine[: available - 1]
            # A digest is a message of its own: folded into a batch it would shrink to a subject and a link.
            waiting = [row.pk for row in rows if row.channel_id == channel_id and row.digest_id and row.pk not in alone]
            Notification.objects.filter(pk__in=waiting).update(next_attempt_at=now + RATE_WINDOW)
            result.deferred += len(waiting)
            rest = list(
                due.exclude(pk__in=alone)
                .filter(digest__isnull=True)
                .select_for_update(skip_locked=True)
                .order_by("next_attempt_at", "id")[:BATCH_MAX]
            )
            keep += alone
            if rest:  # empty when another worker holds them
                keep.append(_batch(channel_id, rest, now=now).pk)
                result.batched += len(rest)
    return keep


def _batch(channel_id: int, rows: list[Notification], *, now: datetime) -> Notification:
    """One entry listing ``rows``, which become batched into it."""
    failures: dict[int, dict] = {}
    for row in rows:
        for summary in row.data.get("failures") or []:
            failures.setdefault(summary["id"], summary)
    items = [
        {
            "id": str(row.uid),
            "step": row.step,
            "step_label": row.data.get("step_label", ""),
            "subject": row.subject,
            "url": row.data.get("url") or failures_list_url(),
            "failure_ids": [summary["id"] for summary in row.data.get("failures") or []],
        }
        for row in rows
    ]
    subject = f"{len(rows)} notifications (batched: over the channel's rate limit)"
    body = "\n".join(f"- {item['subject']}: {item['url']}" for item in items)
    data = {
        "step": "",
        "step_label": "Batched by the rate limit",
        "title": subject,
        "failures": list(failures.values()),
        "group": None,
        "url": items[0]["url"],
        "items": items,
    }
    batch = Notification.objects.create(
        channel_id=channel_id, subject=subject, body=body, data=data, next_attempt_at=now, created_at=now
    )
    batch.failures.set(list(failures))
    Notification.objects.filter(pk__in=[row.pk for row in rows]).update(status=NotificationStatus.BATCHED, batch=batch)
    return batch


def failures_list_url() -> str:
    """The failure list: where a message about no single failure links to."""
    return settings.PORTAL_BASE_URL + reverse("admin:escalation_failure_changelist")


def _deliver_one(notification: Notification, *, now: datetime, result: DeliveryResult) -> None:
    _refresh_failures(notification)
    try:
        if notification.tracker_id is not None and notification.fallout_id is not None:
            _fallout_ticket_open(notification, now=now, result=result)
            return
        if notification.tracker_id is not None:
            _ticket_open(notification, now=now, result=result)
            return
        transport_for(notification, now=now).send(notification)
    except TransportError as exc:
        _failed(notification, exc, now=now, result=result)
        return
    except Exception as exc:  # a bug in a transport must not stop the pass nor drop the entry
        logger.exception("notification %s: unexpected error", notification.uid)
        _failed(notification, TransportError(f"unexpected error ({type(exc).__name__})"), now=now, result=result)
        return
    _delivered(notification, now=now, result=result)


def _refresh_failures(notification: Notification) -> None:
    """Due times and status as they are now (a paused clock moves the due time); in memory only."""
    summaries = notification.data.get("failures") or []
    current = {
        f["pk"]: f
        for f in Failure.objects.filter(pk__in=[s["id"] for s in summaries]).values(
            "pk", "status", "sla_due_at", "breached_at", "paused_at"
        )
    }
    fresh = []
    for summary in summaries:
        row = current.get(summary["id"])
        if row is not None:
            summary = {
                **summary,
                "status": row["status"],
                "sla_due_at": row["sla_due_at"].isoformat() if row["sla_due_at"] else None,
                "breached_at": row["breached_at"].isoformat() if row["breached_at"] else None,
                "is_paused": row["paused_at"] is not None,
            }
        fresh.append(summary)
    notification.data = {**notification.data, "failures": fresh}


def _delivered(notification: Notification, *, now: datetime, result: DeliveryResult, note: str = "") -> None:
    Notification.objects.filter(pk=notification.pk).update(
        status=NotificationStatus.DELIVERED, delivered_at=now, last_error=note
    )
    Notification.objects.filter(batch=notification).update(delivered_at=now)
    result.delivered += 1


def _failed(notification: Notification, error: TransportError, *, now: datetime, result: DeliveryResult) -> None:
    message = error.message[:2000]
    if error.permanent or notification.attempts >= settings.PORTAL_NOTIFY_MAX_ATTEMPTS:
        Notification.objects.filter(pk=notification.pk).update(status=NotificationStatus.DEAD, last_error=message)
        result.dead += 1
    else:
        Notification.objects.filter(pk=notification.pk).update(
            last_error=message, next_attempt_at=now + notification_backoff(notification.attempts)
        )
        result.retrying += 1
    logger.warning("notification %s attempt %s failed: %s", notification.uid, notification.attempts, message)
    if error.permanent:
        _target_disable(notification.channel or notification.tracker, message=message, now=now)
        result.disabled += 1


def _target_disable(target: NotificationChannel | TicketTracker, *, message: str, now: datetime) -> None:
    """A permanent error: stop sending to the target until someone fixes and enables it."""
    with transaction.atomic():
        target = type(target).objects.select_for_update().get(pk=target.pk)
        before = row_state(target)
        target.is_enabled, target.disabled_at, target.last_error = False, now, message
        target.save(update_fields=["is_enabled", "disabled_at", "last_error"])
        audit_record(
            actor=_ACTOR, action=AuditAction.UPDATE, obj=target, at=now, before=before, after=row_state(target),
            reason=f"disabled after a permanent delivery error: {message}"[:300],
        )  # fmt: skip


# --- tickets: one per failure, ever ---


def _ticket_open(notification: Notification, *, now: datetime, result: DeliveryResult) -> None:
    """Open a ticket for the entry's failures that have none, and store its key and URL on them.

    Each such failure is first reserved for this entry (ticket_key = 'opening:<uid>', a conditional
    UPDATE), so two workers never open two tickets for one failure; a retry of the same entry finds
    its own reservation. Failures that all have a ticket already: no call, delivered with a note.
    """
    marker = f"opening:{notification.uid}"
    ids = [summary["id"] for summary in notification.data.get("failures") or []]
    ids = ids or list(notification.failures.values_list("pk", flat=True))
    Failure.objects.filter(Q(ticket_key="") | Q(ticket_key=marker), pk__in=ids).update(ticket_key=marker)
    mine = set(Failure.objects.filter(pk__in=ids, ticket_key=marker).values_list("pk", flat=True))
    if not mine:
        _delivered(notification, now=now, result=result, note="not sent: every failure has a ticket already")
        result.skipped += 1
        return
    data = notification.data
    notification.data = {**data, "failures": [s for s in data.get("failures") or [] if s["id"] in mine]}
    try:
        ref = transport_for(notification, now=now).send(notification)
    except BaseException:
        Failure.objects.filter(pk__in=mine, ticket_key=marker).update(ticket_key="")
        raise
    with transaction.atomic():
        failures = list(Failure.objects.select_for_update().filter(pk__in=mine, ticket_key=marker).order_by("pk"))
        Failure.objects.filter(pk__in=[f.pk for f in failures]).update(ticket_key=ref.key[:100], ticket_url=ref.url)
        data = {"key": ref.key, "url": ref.url, "notification": str(notification.uid)}
        message = f"Ticket {ref.key} opened: {ref.url}"
        TimelineEntry.objects.bulk_create(
            timeline_entry(failure, now, TimelineKind.TICKET_OPENED, _ACTOR, message, data) for failure in failures
        )
        _delivered(notification, now=now, result=result)


def _fallout_ticket_open(notification: Notification, *, now: datetime, result: DeliveryResult) -> None:
    """Open the fallout's ticket once: reserved like a failure's (ticket_key = 'opening:<uid>', a conditional
    UPDATE), so two workers or a second pass never open a second one; its key and URL go on the fallout.
    The failures it lists keep their own tickets."""
    marker = f"opening:{notification.uid}"
    fallout = Fallout.objects.filter(Q(ticket_key="") | Q(ticket_key=marker), pk=notification.fallout_id)
    if not fallout.update(ticket_key=marker):
        _delivered(notification, now=now, result=result, note="not sent: the fallout has a ticket already")
        result.skipped += 1
        return
    try:
        ref = transport_for(notification, now=now).send(notification)
    except BaseException:
        Fallout.objects.filter(pk=notification.fallout_id, ticket_key=marker).update(ticket_key="")
        raise
    with transaction.atomic():
        Fallout.objects.filter(pk=notification.fallout_id, ticket_key=marker).update(
            ticket_key=ref.key[:100], ticket_url=ref.url[:500]
        )
        _delivered(notification, now=now, result=result)


# --- the operator's repairs: retry a dead entry, enable a disabled target ---


def notification_retry(*, notification_ids: list[int], actor: Actor, now: datetime) -> int:
    """Dead letters back to pending, with their attempts reset; due at once. Returns how many."""
    from escalation.services.failures import require_permission

    require_permission(actor, "escalation.retry_notification")
    with transaction.atomic():
        rows = list(
            Notification.objects.select_for_update()
            .filter(pk__in=notification_ids, status=NotificationStatus.DEAD)
            .order_by("pk")
        )
        changes = []
        for row in rows:
            before = row_state(row)
            row.status, row.attempts, row.next_attempt_at = NotificationStatus.PENDING, 0, now
            changes.append((row, before, row_state(row)))
        Notification.objects.bulk_update(rows, ["status", "attempts", "next_attempt_at"])
        audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=changes, at=now, reason="retry")
    return len(rows)


def channel_enable(*, channel_ids: list[int], actor: Actor, now: datetime) -> int:
    """Enable channels again and make their pending entries due at once. Returns how many were disabled."""
    return _targets_enable(NotificationChannel, "channel", ids=channel_ids, actor=actor, now=now)


def tracker_enable(*, tracker_ids: list[int], actor: Actor, now: datetime) -> int:
    """Enable ticket trackers again and make their pending entries due at once. Returns how many were disabled."""
    return _targets_enable(TicketTracker, "tracker", ids=tracker_ids, actor=actor, now=now)


def _targets_enable(model, field_name: str, *, ids: list[int], actor: Actor, now: datetime) -> int:
    from escalation.services.failures import require_permission

    require_permission(actor, f"escalation.change_{model._meta.model_name}")
    with transaction.atomic():
        targets = list(model.objects.select_for_update().filter(pk__in=ids, is_enabled=False).order_by("pk"))
        changes = []
        for target in targets:
            before = row_state(target)
            target.is_enabled, target.disabled_at, target.last_error = True, None, ""
            changes.append((target, before, row_state(target)))
        model.objects.bulk_update(targets, ["is_enabled", "disabled_at", "last_error"])
        Notification.objects.filter(
            **{f"{field_name}__in": model.objects.filter(pk__in=ids)}, status=NotificationStatus.PENDING
        ).update(next_attempt_at=now)
        audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=changes, at=now, reason="enable and retry pending")
    return len(targets)
