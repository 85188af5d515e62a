"""Fallouts: the detection run, one open fallout per rule and scope, decisions, tickets and messages.

Infrastructure fallouts open at once with a ticket on the first owner role's tracker and a message
to every owner role's channels; process and technical-debt fallouts are proposed to their owner
role (Scrum Master, Senior Dev Triage), who confirms (open, ticket) or dismisses them. Everything
goes through the outbox, written in the transaction that opened or decided the fallout.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Max

from escalation.choices import FalloutCategory, FalloutScope, FalloutStatus
from escalation.models import Failure, Fallout, FalloutRule, NotificationChannel, TicketTracker
from escalation.models.fallout import FALLOUT_OPEN_Q
from escalation.services.config import RoutingConfig, routing_config
from escalation.services.failures import require_permission
from escalation.services.fallout.errors import FalloutNotDecidable, FalloutReasonRequired, InvalidFalloutRule
from escalation.services.fallout.patterns import DETECTORS, Hit, Window
from escalation.services.notifications import Message, admin_url, failure_summary, notifications_write
from escalation.services.routing import role_team
from portal.audit import Actor, audit_record, row_state
from portal.models import AuditAction

logger = logging.getLogger(__name__)

DETECT_ACTOR = Actor.task("detect_patterns")
_FINISHED = [FalloutStatus.DISMISSED, FalloutStatus.CLOSED]


@dataclass
class DetectionResult:
    """What one detection run did."""

    rules: int = 0
    hits: int = 0
    opened: int = 0
    proposed: int = 0
    updated: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.rules} fallout rules run, {self.hits} patterns found: {self.opened} fallouts opened, "
            f"{self.proposed} proposed, {self.updated} updated"
        )
        return text + (f"; skipped {'; '.join(self.skipped)}" if self.skipped else "")


# --- the rule row: what its detector can do ---


def fallout_rule_problem(rule: FalloutRule) -> str:
    """Why a detector cannot run this rule as it is set up ('' when it can)."""
    return _rule_problem(rule)[1]


def fallout_rule_check(rule: FalloutRule) -> None:
    """Refuse a rule row its detector cannot run (unknown code, unsupported scope, missing figures);
    the error's ``field`` names the rule field at fault ('' for the code)."""
    field_name, problem = _rule_problem(rule)
    if problem:
        raise InvalidFalloutRule(problem, field=field_name)


def _rule_problem(rule: FalloutRule) -> tuple[str, str]:
    spec = DETECTORS.get(rule.code)
    if spec is None:
        return "", f"no detector is registered for the code {rule.code!r}"
    if rule.scope not in spec.scopes:
        allowed = ", ".join(f"{FalloutScope(s).label.lower()} ({s})" for s in spec.scopes)
        scope = FalloutScope(rule.scope).label.lower() if rule.scope in FalloutScope.values else repr(rule.scope)
        return "scope", f"{rule.name} cannot be counted {scope}; its detector supports: {allowed}"
    missing = [name for name in spec.needs if getattr(rule, name) is None]
    if missing:
        return missing[0], f"{rule.name} needs {' and '.join(missing)}"
    return "", ""


# --- detection ---


def detect_patterns(*, now: datetime) -> DetectionResult:
    """Run every enabled rule's detector over its window and open, propose or add to its fallouts."""
    result = DetectionResult()
    for rule in FalloutRule.objects.filter(is_enabled=True).order_by("code"):
        problem = fallout_rule_problem(rule)
        if problem:
            logger.warning("fallout rule %s skipped: %s", rule.code, problem)
            result.skipped.append(f"{rule.code}: {problem}")
            continue
        result.rules += 1
        window = Window(since=now - rule.window, now=now, cutoffs=_cutoffs(rule))
        for hit in DETECTORS[rule.code].func(rule, window):
            result.hits += 1
            outcome = fallout_upsert(rule=rule, hit=hit, now=now)
            if outcome in ("opened", "proposed", "updated"):
                setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def _cutoffs(rule: FalloutRule) -> dict[str, datetime]:
    """Per scope key, the last dismissal or closing: triggers before it do not count again."""
    rows = (
        Fallout.objects.filter(rule=rule, status__in=_FINISHED, decided_at__isnull=False)
        .values("scope_key")
        .annotate(last=Max("decided_at"))
    )
    return {row["scope_key"]: row["last"] for row in rows}


def fallout_upsert(*, rule: FalloutRule, hit: Hit, now: datetime) -> str:
    """Open (or propose) the fallout of this rule and scope, or add the hit's new triggers to the open one.

    Two runs racing on one scope meet at the partial unique index: the loser's insert waits for the
    winner's commit, fails, rolls back to its savepoint (its messages with it) and adds to the winner's
    fallout instead. Returns 'opened', 'proposed', 'updated' or 'unchanged'.
    """
    with transaction.atomic():
        fallout = _open_fallout(rule, hit.scope_key)
        if fallout is None:
            try:
                with transaction.atomic():
                    created = _fallout_create(rule, hit, now)
                return "opened" if created.status == FalloutStatus.OPEN else "proposed"
            except IntegrityError:
                fallout = _open_fallout(rule, hit.scope_key)
                if fallout is None:
                    raise
        return "updated" if _fallout_merge(fallout, hit, now) else "unchanged"


def _open_fallout(rule: FalloutRule, scope_key: str) -> Fallout | None:
    return (
        Fallout.objects.select_for_update()
        .select_related("rule")
        .filter(FALLOUT_OPEN_Q, rule=rule, scope_key=scope_key)
        .first()
    )


def _fallout_create(rule: FalloutRule, hit: Hit, now: datetime) -> Fallout:
    config = routing_config()
    infrastructure = rule.category == FalloutCategory.INFRASTRUCTURE
    fallout = Fallout.objects.create(
        rule=rule,
        category=rule.category,
        scope_key=hit.scope_key,
        title=f"{rule.name}: {hit.label}"[:300],
        detail=_detail(hit),
        status=FalloutStatus.OPEN if infrastructure else FalloutStatus.PROPOSED,
        owner_team_id=_owner_team(config, rule, hit.repository),
        opened_at=now,
        updated_at=now,
    )
    fallout.failures.set(_existing(hit.failure_ids))
    after, reason = row_state(fallout), f"detected by the {rule.code} rule"
    audit_record(actor=DETECT_ACTOR, action=AuditAction.CREATE, obj=fallout, at=now, after=after, reason=reason)
    stage = "opened" if infrastructure else "proposed"
    notifications_write(fallout_messages(fallout, config=config, stage=stage), now=now)
    return fallout


def _fallout_merge(fallout: Fallout, hit: Hit, now: datetime) -> bool:
    """Add the hit's new triggers and figures to the open fallout; True when anything was new."""
    listed = set(fallout.failures.values_list("pk", flat=True))
    new = _existing([i for i in hit.failure_ids if i not in listed])
    detail = _detail(hit)
    if not new and _figures(detail) == _figures(fallout.detail):
        return False
    fallout.failures.add(*new)
    fallout.detail, fallout.updated_at = detail, now
    fallout.save(update_fields=["detail", "updated_at"])
    return True


def _detail(hit: Hit) -> dict:
    return {**hit.detail, "scope_label": hit.label, "repository": hit.repository}


def _figures(detail: dict) -> dict:
    return {k: v for k, v in detail.items() if k not in ("since", "until")}


def _existing(failure_ids: list[int]) -> list[int]:
    return sorted(Failure.objects.filter(pk__in=failure_ids).values_list("pk", flat=True)) if failure_ids else []


def _team_of(config: RoutingConfig, role: str, repository: str) -> int | None:
    """The role's team for the repository by the ownership rules when the scope names one, else its default."""
    if repository:
        return role_team(config=config, role=role, repository=repository, paths=[])
    return config.role_teams.get(role)


def _owner_team(config: RoutingConfig, rule: FalloutRule, repository: str) -> int | None:
    roles = rule.owner_roles or []
    return _team_of(config, roles[0], repository) if roles else None


def _role_teams(config: RoutingConfig, fallout: Fallout) -> list[int]:
    """Every owner role's team for the fallout's repository (when its scope has one), each once."""
    repository = fallout.detail.get("repository", "")
    teams = []
    for role in fallout.rule.owner_roles or []:
        team_id = _team_of(config, role, repository)
        if team_id is not None and team_id not in teams:
            teams.append(team_id)
    if fallout.owner_team_id is not None and fallout.owner_team_id not in teams:
        teams.insert(0, fallout.owner_team_id)
    return teams


# --- decisions ---


def fallout_confirm(*, fallout_id: int, actor: Actor, now: datetime, reason: str = "") -> Fallout:
    """A proposed fallout is real: it opens, and its ticket and messages go to its owners."""
    return _decide(fallout_id, actor, now, reason, expected=FalloutStatus.PROPOSED, to=FalloutStatus.OPEN)


def fallout_dismiss(*, fallout_id: int, actor: Actor, now: datetime, reason: str) -> Fallout:
    """A proposed fallout is not worth a ticket; the reason is kept, and its triggers never count again."""
    if not reason.strip():
        raise FalloutReasonRequired("dismissing a fallout needs a reason")
    return _decide(fallout_id, actor, now, reason, expected=FalloutStatus.PROPOSED, to=FalloutStatus.DISMISSED)


def fallout_close(*, fallout_id: int, actor: Actor, now: datetime, reason: str = "") -> Fallout:
    """An open fallout's follow-up is done; later triggers may open a new one."""
    return _decide(fallout_id, actor, now, reason, expected=FalloutStatus.OPEN, to=FalloutStatus.CLOSED)


def _decide(fallout_id: int, actor: Actor, now: datetime, reason: str, *, expected: str, to: str) -> Fallout:
    require_permission(actor, "escalation.decide_fallout")
    with transaction.atomic():
        fallout = Fallout.objects.select_for_update().select_related("rule").get(pk=fallout_id)
        if fallout.status != expected:
            raise FalloutNotDecidable(
                f"fallout {fallout_id} is {fallout.get_status_display().lower()}; only a "
                f"{FalloutStatus(expected).label.lower()} one can become {FalloutStatus(to).label.lower()}"
            )
        before = row_state(fallout)
        fallout.status, fallout.decided_at, fallout.decided_by = to, now, actor.user
        fallout.decision_reason, fallout.updated_at = reason.strip(), now
        fallout.save(update_fields=["status", "decided_at", "decided_by", "decision_reason", "updated_at"])
        note = f"{FalloutStatus(to).label.lower()}: {reason}".strip()
        after = row_state(fallout)
        audit_record(
            actor=actor, action=AuditAction.UPDATE, obj=fallout, at=now, before=before, after=after, reason=note
        )
        if to == FalloutStatus.OPEN:
            notifications_write(fallout_messages(fallout, config=routing_config(), stage="opened"), now=now)
    return fallout


# --- messages ---


def fallout_url(fallout_id: int) -> str:
    return admin_url("fallout", fallout_id)


CHAT_LABEL_CHARS = 1500  # a chat message says the pattern, scope and count; the ticket and the page say the rest
LIST_ITEMS = 50  # slow runs or failing shares listed in a ticket; the fallout's page has them all


def fallout_messages(fallout: Fallout, *, config: RoutingConfig, stage: str) -> list[Message]:
    """'opened': a ticket on the owner team's tracker and a message to every owner team's channels;
    'proposed': a message to the owner team's channels, asking for a decision."""
    subject, lines = fallout_text(fallout, stage=stage)
    failures = Failure.objects.filter(fallouts=fallout).select_related("repository").order_by("id")
    teams = {pk: team.name for pk, team in config.teams.items()}
    summaries = [failure_summary(failure, teams=teams) for failure in failures]
    failure_lines = [
        f"- #{s['id']} {s['type']} {s['repository']}:{s['branch']} {s['job']}: {s['url']}" for s in summaries
    ]
    data = {
        "step": "",
        "step_label": "\n".join(lines),
        "title": subject,
        "failures": summaries,
        "group": None,
        "url": fallout_url(fallout.pk),
        "fallout": {"id": fallout.pk, "rule": fallout.rule.code, "scope_key": fallout.scope_key, "stage": stage},
    }
    chat_label = "\n".join([*lines[:3], _count_line(fallout), lines[-1]])[:CHAT_LABEL_CHARS]

    def message(key: str, *, label: str, **target) -> Message:
        return Message(
            subject=subject,
            body="\n".join([label, *failure_lines]),
            data={**data, "step_label": label},
            failure_ids=[s["id"] for s in summaries],
            dedupe_key=f"fallout:{fallout.pk}:{key}",
            fallout_id=fallout.pk,
            **target,
        )

    team_ids = _role_teams(config, fallout) if stage == "opened" else [fallout.owner_team_id]
    messages = []
    if stage == "opened":
        tracker = TicketTracker.objects.filter(team_id=fallout.owner_team_id).first()
        if tracker is not None:
            messages.append(message("ticket", label="\n".join(lines), tracker=tracker))
    for channel in NotificationChannel.objects.filter(team_id__in=[t for t in team_ids if t]).order_by("id"):
        messages.append(message(f"{stage}:channel:{channel.pk}", label=chat_label, channel=channel))
    return messages


def _count_line(fallout: Fallout) -> str:
    detail = fallout.detail
    return f"Found: {detail.get('count')} {detail.get('unit', 'triggers')} (threshold {detail.get('threshold')})"


def fallout_text(fallout: Fallout, *, stage: str) -> tuple[str, list[str]]:
    """The subject and the lines the ticket says: the pattern, the scope, the figures, the fallout's page."""
    rule, detail = fallout.rule, fallout.detail
    heading = "Fallout proposed: confirm or dismiss" if stage == "proposed" else "Fallout"
    subject = f"[{heading.split(':')[0]}] {fallout.title}"[:300]
    lines = [
        f"{heading}: {rule.name} ({fallout.get_category_display().lower()})",
        f"Pattern: {rule.pattern}",
        "Scope: "
        + (
            "everywhere"
            if rule.scope == FalloutScope.GLOBAL
            else f"{FalloutScope(rule.scope).label.lower()}: {detail.get('scope_label', fallout.scope_key)}"
        ),
        "Figures:",
    ]
    for key, value in detail.items():
        if key in ("scope_label", "failure_ids") or value in ("", None):
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"- {key.replace('_', ' ')}:")
            items = value[:LIST_ITEMS]
            lines.extend("  - " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in item.items()) for item in items)
            if len(value) > LIST_ITEMS:
                lines.append(f"  - and {len(value) - LIST_ITEMS} more on the fallout's page")
        else:
            lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines.append(f"Fallout page: {fallout_url(fallout.pk)}")
    return subject, lines
