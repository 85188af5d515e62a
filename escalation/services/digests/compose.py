"""Compose and send a digest: figures -> templates -> one Digest row and its outbox entries, in one transaction.

One digest per kind, audience and period however many senders run at once: the row is inserted with
``ON CONFLICT DO NOTHING`` on that unique key; a concurrent sender waits at the unique index until the
first commits and then inserts nothing, so it writes no outbox entry either. Each entry's dedupe key
(digest, channel) is the outbox's own backstop.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from escalation.choices import DigestKind
from escalation.models import Digest, NotificationChannel
from escalation.services.digests import figures as f
from escalation.services.digests.schedule import DigestPlan, digests_due, month_before
from escalation.services.notifications import Message, admin_url, notifications_write

DAILY_COUNTED = ("breached_without_plan", "new_failures", "at_risk", "new_fallouts", "level_2")


@dataclass(frozen=True)
class Composed:
    """A digest rendered, not stored: what a dry run prints."""

    plan: DigestPlan
    subject: str
    figures: dict
    text: str
    html: str

    @property
    def has_news(self) -> bool:
        """Daily digests with nothing to report are stored but not sent; reports always go."""
        if self.plan.kind != DigestKind.DAILY:
            return True
        counted = any(self.figures.get(name, {}).get("count") for name in DAILY_COUNTED)
        return counted or bool(self.figures["sla_hit_rate_by_type"]["total"])


@dataclass(frozen=True)
class Sent:
    digest: Digest
    created: bool
    notifications: int


def digest_figures(plan: DigestPlan, *, now: datetime) -> dict:
    """The figures of one digest (see figures.py for each one's definition)."""
    start, end, zone, team_id = plan.period_start, plan.period_end, plan.zone, plan.scope_team_id
    if plan.kind == DigestKind.DAILY:
        daily = {
            "breached_without_plan": f.breached_without_plan(now=now, team_id=team_id, zone=zone),
            "new_failures": f.failures_new(start=start, end=end, now=now, team_id=team_id, zone=zone),
            "at_risk": f.failures_at_risk(now=now, team_id=team_id, zone=zone),
            "new_fallouts": f.fallouts_new(start=start, end=end, team_id=team_id, zone=zone),
            "sla_hit_rate_by_type": f.sla_hit_rate_by_type(start=start, end=end, team_id=team_id),
        }
        if team_id is None:
            daily["level_2"] = f.level_two_failures(now=now, zone=zone)
            daily["sla_hit_rate_by_team"] = f.sla_hit_rate_by_team(start=start, end=end)
        return daily
    if plan.kind == DigestKind.WEEKLY:
        return {
            **_period_figures(start, end),
            "overrides_by_team": f.overrides_by_team(start=start, end=end),
            "open_fallouts": f.fallouts_open(zone=zone),
        }
    previous = month_before(start, zone)
    breach_change = f.breach_rate_change_by_type(current=(start, end), previous=(previous, start))
    corrected = f.rules_most_corrected(start=start, end=end)
    budget = f.teams_over_override_budget(start=start, end=end)
    return {
        "current": {**_period_figures(start, end), "new_fallouts": f.fallouts_new(start=start, end=end, zone=zone)},
        "previous": {
            **_period_figures(previous, start),
            "new_fallouts": f.fallouts_new(start=previous, end=start, zone=zone),
        },
        "previous_period": {"start": previous.isoformat(), "end": start.isoformat(), "text": _month(previous, plan)},
        "breach_rate_change": breach_change,
        "rules_most_corrected": corrected,
        "teams_over_override_budget": budget,
        "open_fallouts": f.fallouts_open(zone=zone),
        "recommendations": f.recommendations(
            breach_rate_change=breach_change, rules_corrected=corrected, override_budget=budget
        ),
    }


def _period_figures(start: datetime, end: datetime) -> dict:
    return {
        "sla_hit_rate_by_type": f.sla_hit_rate_by_type(start=start, end=end),
        "sla_hit_rate_by_team": f.sla_hit_rate_by_team(start=start, end=end),
        "time_to_acknowledge": f.time_to_acknowledge(start=start, end=end),
        "time_to_resolve": f.time_to_resolve(start=start, end=end),
        "repeat_failures": f.repeat_failures(start=start, end=end),
    }


def _month(start: datetime, plan: DigestPlan) -> str:
    return start.astimezone(plan.zone).strftime("%B %Y")


def _period_text(plan: DigestPlan) -> str:
    zone = plan.zone
    if plan.kind == DigestKind.MONTHLY:
        return _month(plan.period_start, plan)
    fmt = "%a %d %b %Y %H:%M" if plan.kind == DigestKind.DAILY else "%a %d %b %Y"
    start = plan.period_start.astimezone(zone).strftime(fmt)
    end = plan.period_end.astimezone(zone).strftime(fmt)
    return f"{start} to {end} ({plan.team.timezone})"


def digest_subject(plan: DigestPlan, figures: dict) -> str:
    if plan.kind == DigestKind.DAILY:
        who = "all teams" if plan.role else plan.team.name
        counts = [
            f"{figures['breached_without_plan']['count']} breached without a plan",
            f"{figures['new_failures']['count']} new",
            f"{figures['at_risk']['count']} at risk",
        ]
        if "level_2" in figures:
            counts.insert(0, f"{figures['level_2']['count']} at level 2")
        return f"Standup digest, {who}: " + ", ".join(counts)
    if plan.kind == DigestKind.WEEKLY:
        week = plan.period_start.astimezone(plan.zone).isocalendar()
        return f"Weekly SLA report, week {week.week} of {week.year}"
    return f"Monthly process review, {_month(plan.period_start, plan)}"


def _audience_text(plan: DigestPlan) -> str:
    if plan.kind == DigestKind.DAILY and plan.role:
        return "Scrum Master, all teams"
    return "Scrum Master" if plan.kind == DigestKind.MONTHLY else plan.team.name


def _tidy(text: str) -> str:
    """Templates leave blank lines where their tags stood: one blank line between sections at most."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def _breached_section(plan: DigestPlan, figures: dict) -> dict:
    """A daily digest's breached failures without a plan; the cross-team digest lists its level-2 ones above
    them, so there this section holds the others."""
    listed = figures.get("breached_without_plan")
    if listed is None or plan.kind != DigestKind.DAILY or "level_2" not in figures:
        return {"breached": listed, "breached_title": "Breached without a plan"}
    items = [item for item in listed["items"] if not item.get("level_2")]
    count = listed["count"] - figures["level_2"]["count"]
    rest = {"items": items, "count": count, "more": max(0, count - len(items))}
    return {"breached": {**listed, **rest}, "breached_title": "Breached without a plan, not yet at level 2"}


def digest_compose(plan: DigestPlan, *, now: datetime) -> Composed:
    """The digest's figures, subject, text and HTML; stores nothing."""
    figures = digest_figures(plan, now=now)
    subject = digest_subject(plan, figures)
    context = {
        "subject": subject,
        "kind": plan.kind,
        "kind_label": DigestKind(plan.kind).label,
        "audience": _audience_text(plan),
        "period_text": _period_text(plan),
        "figures": figures,
        "is_cross_team": plan.scope_team_id is None,
        **_breached_section(plan, figures),
        "portal_url": settings.PORTAL_BASE_URL,
    }
    text = _tidy(render_to_string(f"escalation/digests/{plan.kind}.txt", context))
    html = render_to_string(f"escalation/digests/{plan.kind}.html", context)
    return Composed(plan=plan, subject=subject[:300], figures=figures, text=text, html=html)


def digest_send(plan: DigestPlan, *, now: datetime, queued_at: datetime | None = None) -> Sent:
    """Store the plan's digest and queue it to the audience team's enabled channels, once.

    ``now`` is the moment the figures are computed at; ``queued_at`` (default ``now``) when the messages are
    due, so a digest composed for another moment by hand (``send_digest --at``) still goes out at once.

    A daily digest with nothing to report is stored without messages, so it is neither recomputed nor sent.
    A digest already stored for this kind, audience and period is returned with ``created`` False.
    """
    composed = digest_compose(plan, now=now)
    digest = Digest(
        kind=plan.kind,
        audience=plan.audience,
        team=plan.team,
        role=plan.role,
        period_start=plan.period_start,
        period_end=plan.period_end,
        subject=composed.subject,
        figures=composed.figures,
        text=composed.text,
        html=composed.html,
        created_at=queued_at or now,
    )
    with transaction.atomic():
        digest.pk = _insert_once(digest)
        if digest.pk is None:
            stored = Digest.objects.get(kind=plan.kind, audience=plan.audience, period_start=plan.period_start)
            return Sent(digest=stored, created=False, notifications=0)
        messages = _messages(digest) if composed.has_news else []
        inserted = notifications_write(messages, now=queued_at or now)
    return Sent(digest=digest, created=True, notifications=len(inserted))


def _insert_once(digest: Digest) -> int | None:
    """Insert the row unless its (kind, audience, period_start) exists: its id, or None.

    A concurrent insert of the same digest waits at the unique constraint and then fails here. Any other
    integrity error is a fault, raised as it is.
    """
    try:
        with transaction.atomic():
            digest.save(force_insert=True)
    except IntegrityError:
        key = {"kind": digest.kind, "audience": digest.audience, "period_start": digest.period_start}
        if Digest.objects.filter(**key).exists():
            return None
        raise
    return digest.pk


def digest_url(digest_id: int) -> str:
    return admin_url("digest", digest_id)


def _messages(digest: Digest) -> list[Message]:
    channels = NotificationChannel.objects.filter(team_id=digest.team_id, is_enabled=True).order_by("id")
    data = {
        "step_label": DigestKind(digest.kind).label,
        "title": digest.subject,
        "url": digest_url(digest.pk),
        "digest": {
            "id": digest.pk,
            "kind": digest.kind,
            "audience": digest.audience,
            "period_start": digest.period_start.isoformat(),
            "period_end": digest.period_end.isoformat(),
        },
    }
    return [
        Message(
            subject=digest.subject,
            body=digest.text,
            data=data,
            failure_ids=[],
            channel=channel,
            dedupe_key=f"digest:{digest.pk}:c{channel.pk}",
            digest_id=digest.pk,
        )
        for channel in channels
    ]


def digests_send_due(*, now: datetime) -> list[Sent]:
    """Send every digest due at ``now`` (``schedule.digests_due``), each in its own transaction."""
    return [digest_send(plan, now=now) for plan in digests_due(now=now)]
