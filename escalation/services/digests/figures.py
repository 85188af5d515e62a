"""The digests' figures: one function per figure, whose docstring is its definition (README "Digests and reports").

Every figure counts failures on protected branches only (the others have no SLA and never escalate), except
"rules most often corrected", which measures a classification rule wherever it classified. A period is
``[start, end)``. A failure resolved as superseded (a run-level failure replaced by its jobs' failures) is no
failure of its own and counts in no SLA or duration figure; its successors carry the clock. Every other
resolution counts like a fix: fixed, recovered and false positive alike (answering a false positive in time
meets the SLA; leaving it for days misses it). Figures are JSON-safe: they are stored on the Digest row.
"""

import math
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

from django.db.models import Count, Max, Q, QuerySet

from escalation.choices import FailureType, Resolution
from escalation.models import Failure, FailureOccurrence, Fallout, TimelineEntry
from escalation.models.failures import TimelineKind
from escalation.models.fallout import FALLOUT_OPEN_Q
from escalation.services import escalation as ladder
from escalation.services import sla
from escalation.services.notifications import failure_url
from escalation.transports import duration_text

LIST_LIMIT = 50  # items a list shows; the count says how many there are
TOP = 10  # repeat failures and rules shown
OVERRIDES_NOT_TRACKED = "not tracked yet (overrides arrive with a later issue, so there is nothing to count)"


def _protected(team_id: int | None) -> QuerySet[Failure]:
    failures = Failure.objects.filter(is_protected_branch=True)
    return failures if team_id is None else failures.filter(owner_team_id=team_id)


def _rate(hit: int, total: int) -> float | None:
    return round(100 * hit / total, 1) if total else None


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%a %d %b %H:%M") if moment else ""


# --- SLA hit rate ---


def sla_outcomes(*, start: datetime, end: datetime, team_id: int | None = None) -> list[dict]:
    """The failures whose SLA ended in the period, each with whether it was hit.

    1. A failure's SLA ends when it is resolved, if that is at or before its due time (a hit), else at its
       due time (a miss, whether it was resolved later or is still open). ``sla_due_at`` already moved by
       every ended clock pause, so paused time is excluded.
    2. A failure resolved while its clock stood still (``paused_at`` set) stopped its clock at the pause:
       it is a hit when the pause began at or before its due time.
    3. Failures without an SLA, superseded ones and open failures whose clock stands still (their due time
       will still move) do not count.
    """
    rows = (
        _protected(team_id)
        .filter(sla_due_at__isnull=False)
        .exclude(resolution=Resolution.SUPERSEDED)
        .filter(Q(resolved_at__gte=start, resolved_at__lt=end) | Q(sla_due_at__gte=start, sla_due_at__lt=end))
        .values("id", "failure_type", "owner_team__name", "sla_due_at", "resolved_at", "paused_at")
    )
    outcomes = []
    for row in rows:
        resolved_at, due = row["resolved_at"], row["sla_due_at"]
        if resolved_at is None and row["paused_at"] is not None:
            continue
        stopped = min(resolved_at, row["paused_at"] or resolved_at) if resolved_at else None
        hit = stopped is not None and stopped <= due
        ended = resolved_at if hit else due
        if start <= ended < end:
            outcomes.append({**row, "hit": hit, "team": row["owner_team__name"] or "nobody"})
    return outcomes


def _hit_rates(outcomes: list[dict], key: str, label) -> dict:
    groups: dict[str, list[bool]] = defaultdict(list)
    for outcome in outcomes:
        groups[outcome[key]].append(outcome["hit"])
    rows = [
        {"key": name, "label": label(name), "hit": sum(hits), "total": len(hits), "rate": _rate(sum(hits), len(hits))}
        for name, hits in sorted(groups.items())
    ]
    hit = sum(o["hit"] for o in outcomes)
    return {"rows": rows, "hit": hit, "total": len(outcomes), "rate": _rate(hit, len(outcomes))}


def _type_label(value: str) -> str:
    return FailureType(value).label if value in FailureType.values else value


def sla_hit_rate_by_type(*, start: datetime, end: datetime, team_id: int | None = None) -> dict:
    """SLA hit rate per failure type: of the failures whose SLA ended in the period (``sla_outcomes``), the
    share resolved at or before their due time, in percent; ``rate`` is None where none ended."""
    return _hit_rates(sla_outcomes(start=start, end=end, team_id=team_id), "failure_type", _type_label)


def sla_hit_rate_by_team(*, start: datetime, end: datetime) -> dict:
    """SLA hit rate per owning team: as ``sla_hit_rate_by_type``, grouped by the failure's owning team."""
    return _hit_rates(sla_outcomes(start=start, end=end), "team", str)


def breach_rate_change_by_type(*, current: tuple[datetime, datetime], previous: tuple[datetime, datetime]) -> list:
    """Breach rate per failure type in this period and the one before (misses over failures whose SLA ended,
    ``sla_outcomes``, in percent), and the change in percentage points. ``rose`` only when both periods have
    data and the rate went up: a type with no SLA ends last period has no trend yet."""
    now_rates = _breach_rates(*current)
    before_rates = _breach_rates(*previous)
    rows = []
    for failure_type in sorted(set(now_rates) | set(before_rates)):
        this, last = now_rates.get(failure_type), before_rates.get(failure_type)
        change = round(this - last, 1) if this is not None and last is not None else None
        rows.append(
            {
                "key": failure_type,
                "label": _type_label(failure_type),
                "previous": last,
                "current": this,
                "change": change,
                "rose": change is not None and change > 0,
            }
        )
    return rows


def _breach_rates(start: datetime, end: datetime) -> dict[str, float]:
    rates = sla_hit_rate_by_type(start=start, end=end)["rows"]
    return {row["key"]: round(100 - row["rate"], 1) for row in rates}


# --- durations ---


def percentile(values: list[float], share: float) -> float | None:
    """The ``share`` (0-100) percentile with linear interpolation between the closest ranks (PostgreSQL's
    ``percentile_cont``): rank ``(n - 1) * share / 100`` of the sorted values. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * share / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _durations(seconds: list[float]) -> dict:
    """Count, median and p90 in whole seconds (and as text)."""
    median, p90 = (None if v is None else round(v) for v in (percentile(seconds, 50), percentile(seconds, 90)))
    return {
        "count": len(seconds),
        "median_seconds": median,
        "p90_seconds": p90,
        "median": duration_text(median) if median is not None else "",
        "p90": duration_text(p90) if p90 is not None else "",
    }


def time_to_acknowledge(*, start: datetime, end: datetime, team_id: int | None = None) -> dict:
    """Median and p90 (``percentile``) of acknowledged_at - first_seen_at over the failures acknowledged in the
    period: wall-clock time, nights and paused time included. Failures resolved without an acknowledgement
    do not count."""
    rows = (
        _protected(team_id)
        .exclude(resolution=Resolution.SUPERSEDED)
        .filter(acknowledged_at__gte=start, acknowledged_at__lt=end)
        .values_list("first_seen_at", "acknowledged_at")
    )
    return _durations([(acked - seen).total_seconds() for seen, acked in rows])


def time_to_resolve(*, start: datetime, end: datetime, team_id: int | None = None) -> dict:
    """Median and p90 (``percentile``) of resolved_at - first_seen_at over the failures resolved in the period,
    superseded ones excepted: wall-clock time, nights and paused time included."""
    rows = (
        _protected(team_id)
        .exclude(resolution=Resolution.SUPERSEDED)
        .filter(resolved_at__gte=start, resolved_at__lt=end)
        .values_list("first_seen_at", "resolved_at")
    )
    return _durations([(resolved - seen).total_seconds() for seen, resolved in rows])


# --- failure lists ---


def _items(failures: QuerySet[Failure], *, zone: ZoneInfo, now: datetime) -> dict:
    failures = failures.select_related("repository", "owner_team")
    rows = list(failures[:LIST_LIMIT])
    items = [_failure_item(f, zone=zone, now=now) for f in rows]
    count = len(items) if len(items) < LIST_LIMIT else failures.count()
    return {"count": count, "items": items, "more": count - len(items)}


def _failure_item(failure: Failure, *, zone: ZoneInfo, now: datetime) -> dict:
    owner = failure.owner_team
    # A failure past its due time that the sweep has not marked yet counts as breached at its due time.
    breach = failure.breached_at or failure.sla_due_at
    level_two_due = ladder.level_two_due_at(failure, team=owner, breached_at=breach) if failure.is_open else None
    return {
        "id": failure.pk,
        "type": failure.failure_type,
        "repository": failure.repository.name,
        "branch": failure.branch,
        "job": failure.job_name,
        "owner": owner.name if owner else "nobody",
        "opened": _local(failure.first_seen_at, zone),
        "due": _local(failure.sla_due_at, zone),
        "breached": _local(failure.breached_at, zone),
        "level": failure.escalation_level,
        # Level 2 is taken, or due: the sweep records it at the owning team's standup, maybe just after this.
        "level_2": failure.escalation_level >= 2 or (level_two_due is not None and level_two_due <= now),
        "url": failure_url(failure.pk),
    }


def breached_without_plan(*, now: datetime, team_id: int | None = None, zone: ZoneInfo) -> dict:
    """Open failures past their SLA due time (``sla.breached_q``: marked breached by the sweep, or due and not
    paused) with no resolution plan, oldest due first. ``level_2`` marks those taken, or due, to the Scrum
    Master: still so at the owning team's first standup after the breach."""
    failures = _protected(team_id).filter(sla.breached_q(now=now), resolution_plan="").order_by("sla_due_at", "id")
    return _items(failures, zone=zone, now=now)


def level_two_failures(*, now: datetime, zone: ZoneInfo) -> dict:
    """Every open failure at level 2, across teams: breached with no plan, and the owning team's first standup
    after the breach has come (the sweep records the step then; the Scrum Master's digest delivers it)."""
    listed = breached_without_plan(now=now, zone=zone)
    if listed["more"]:
        failures = _protected(None).filter(sla.breached_q(now=now), resolution_plan="").order_by("sla_due_at", "id")
        everything = [_failure_item(f, zone=zone, now=now) for f in failures.select_related("repository", "owner_team")]
    else:
        everything = listed["items"]
    items = [item for item in everything if item["level_2"]]
    return {"count": len(items), "items": items[:LIST_LIMIT], "more": max(0, len(items) - LIST_LIMIT)}


def failures_new(*, start: datetime, end: datetime, now: datetime, team_id: int | None = None, zone: ZoneInfo) -> dict:
    """Failures first seen in the period, newest first, and how many of each type."""
    failures = _protected(team_id).filter(first_seen_at__gte=start, first_seen_at__lt=end)
    listed = _items(failures.order_by("-first_seen_at", "-id"), zone=zone, now=now)
    by_type = failures.values("failure_type").annotate(n=Count("id")).order_by("-n", "failure_type")
    listed["by_type"] = [{"key": row["failure_type"], "count": row["n"]} for row in by_type]
    return listed


def failures_at_risk(*, now: datetime, team_id: int | None = None, zone: ZoneInfo) -> dict:
    """Open failures that have spent 75 % of their SLA budget and are not breached (``sla.at_risk_q``), soonest
    due first."""
    failures = _protected(team_id).filter(sla.at_risk_q(now=now)).order_by("sla_due_at", "id")
    return _items(failures, zone=zone, now=now)


# --- patterns ---


def _fallout_items(fallouts: QuerySet[Fallout], *, zone: ZoneInfo) -> dict:
    fallouts = fallouts.select_related("rule", "owner_team").order_by("-opened_at", "-id")
    rows = list(fallouts[:LIST_LIMIT])
    count = len(rows) if len(rows) < LIST_LIMIT else fallouts.count()
    items = [
        {
            "id": f.pk,
            "title": f.title,
            "rule": f.rule.name,
            "status": f.status,
            "owner": f.owner_team.name if f.owner_team else "",
            "opened": _local(f.opened_at, zone),
        }
        for f in rows
    ]
    return {"count": count, "items": items, "more": count - len(items)}


def fallouts_new(*, start: datetime, end: datetime, team_id: int | None = None, zone: ZoneInfo) -> dict:
    """Fallouts opened or proposed in the period (whatever their status now), for the team when one is given."""
    fallouts = Fallout.objects.filter(opened_at__gte=start, opened_at__lt=end)
    if team_id is not None:
        fallouts = fallouts.filter(owner_team_id=team_id)
    return _fallout_items(fallouts, zone=zone)


def fallouts_open(*, zone: ZoneInfo) -> dict:
    """Fallouts open or proposed now (no decision yet, or confirmed and not closed)."""
    return _fallout_items(Fallout.objects.filter(FALLOUT_OPEN_Q), zone=zone)


def repeat_failures(*, start: datetime, end: datetime, team_id: int | None = None, top: int = TOP) -> dict:
    """Fingerprints (repository, branch, job, type) seen more than once in the period: counted by occurrences
    (each CI event that reported a failure) in the period, across the fingerprint's failures, so a failure
    that recurs and one that resolved and opened again both count. The ``top`` with the most occurrences."""
    occurrences = FailureOccurrence.objects.filter(
        seen_at__gte=start, seen_at__lt=end, failure__is_protected_branch=True
    )
    if team_id is not None:
        occurrences = occurrences.filter(failure__owner_team_id=team_id)
    grouped = (
        occurrences.values("failure__fingerprint")
        .annotate(occurrences=Count("id"), failures=Count("failure", distinct=True), latest=Max("failure_id"))
        .filter(occurrences__gt=1)
        .order_by("-occurrences", "failure__fingerprint")
    )
    count = grouped.count()
    rows = list(grouped[:top])
    latest = Failure.objects.select_related("repository").in_bulk([row["latest"] for row in rows])
    items = []
    for row in rows:
        failure = latest[row["latest"]]
        items.append(
            {
                "fingerprint": row["failure__fingerprint"],
                "type": failure.failure_type,
                "repository": failure.repository.name,
                "branch": failure.branch,
                "job": failure.job_name,
                "occurrences": row["occurrences"],
                "failures": row["failures"],
                "url": failure_url(failure.pk),
            }
        )
    return {"count": count, "items": items, "more": count - len(items)}


def rules_most_corrected(*, start: datetime, end: datetime, top: int = TOP) -> dict:
    """Classification rules by the type corrections made in the period (timeline entries "type corrected"),
    each counted against the rule that decided the corrected type (the failure's ``classification_rule``,
    kept after the correction), on any branch; the ``top`` most corrected. Reclassifications by a rule
    change are the rules' own fixes and do not count."""
    grouped = (
        TimelineEntry.objects.filter(
            kind=TimelineKind.TYPE_CORRECTED, at__gte=start, at__lt=end, failure__classification_rule__isnull=False
        )
        .values("failure__classification_rule_id", "failure__classification_rule__name")
        .annotate(n=Count("id"))
        .order_by("-n", "failure__classification_rule__name")
    )
    rows = list(grouped[: top + 1])
    rule_id, name = "failure__classification_rule_id", "failure__classification_rule__name"
    items = [{"rule_id": r[rule_id], "rule": r[name], "count": r["n"]} for r in rows[:top]]
    return {"count": len(items), "items": items, "more": len(rows) > top}


# --- overrides: not tracked yet ---


def overrides_by_team(*, start: datetime, end: datetime) -> dict:
    """Overrides granted per team in the period. Not tracked yet: there is no override record until overrides
    arrive with a later issue, so this says so rather than show a zero."""
    return {"tracked": False, "note": OVERRIDES_NOT_TRACKED, "rows": []}


def teams_over_override_budget(*, start: datetime, end: datetime) -> dict:
    """Teams with more overrides in the period than their budget. Not tracked yet, as ``overrides_by_team``."""
    return {"tracked": False, "note": OVERRIDES_NOT_TRACKED, "rows": []}


def recommendations(*, breach_rate_change: list, rules_corrected: dict, override_budget: dict) -> list[str]:
    """What the monthly review suggests, each derived from a figure: failure types whose breach rate rose,
    the rules most often corrected, teams over the override budget (or that it is not tracked yet)."""
    advice = [
        f"Breach rate of {row['label']} rose from {row['previous']} % to {row['current']} %: review its SLA budget, "
        f"its owners and what held its failures up."
        for row in breach_rate_change
        if row["rose"]
    ]
    advice += [
        f"Rule {item['rule']!r} was corrected {item['count']} time(s): review its pattern with a preview."
        for item in rules_corrected["items"]
    ]
    if not override_budget["tracked"]:
        advice.append(f"Override budget: {override_budget['note']}.")
    else:
        advice += [f"Team {row['team']} is over its override budget." for row in override_budget["rows"]]
    return advice
