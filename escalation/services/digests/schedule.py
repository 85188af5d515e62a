"""When each digest is due, for whom, and the period it covers (README "Digests and reports").

A digest is due from its moment on until it is stored: the scheduled task asks every few minutes, so a
worker that was down sends the latest period's digest late rather than never (older periods are not
caught up). Moments are wall-clock times in the audience team's time zone.
"""

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db.models import Q

from escalation.choices import DigestKind, Role
from escalation.models import Digest, Failure, RoleDefaultTeam, Team
from escalation.services import sla
from escalation.services.sla import wall_clock

# The weekly report goes to the teams of these roles (each team once), the daily cross-team digest and the
# monthly review to the Scrum Master's.
STAKEHOLDER_ROLES = (Role.PRODUCT_OWNER, Role.TECHNICAL_ARCHITECT, Role.SCRUM_MASTER)
MONDAY = 0


@dataclass(frozen=True)
class DigestPlan:
    """One digest to compose: its kind, audience, the team whose channels and calendar it uses, its period.

    ``scope_team_id`` is the team whose failures it covers; None covers every team.
    """

    kind: str
    audience: str
    team: Team
    role: str
    period_start: datetime
    period_end: datetime
    moment: datetime

    @property
    def scope_team_id(self) -> int | None:
        return None if self.role else self.team.pk

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.team.timezone)


def team_audience(team: Team) -> str:
    return f"team:{team.pk}"


def standup_before(team: Team, moment: datetime) -> datetime:
    """The team's standup before the one at ``moment``; a day earlier when it has none in the past year."""
    found = sla.latest_standup(team=team, now=moment - timedelta(seconds=1))
    return found if found is not None else moment - timedelta(days=1)


def daily_plan(team: Team, *, now: datetime, role: str = "") -> DigestPlan | None:
    """The team's (or, with ``role``, the role's cross-team) daily digest of its latest standup: the period runs
    from the standup before to that one, so a Monday's covers the weekend."""
    moment = sla.latest_standup(team=team, now=now)
    if moment is None:
        return None
    audience = role or team_audience(team)
    return DigestPlan(DigestKind.DAILY, audience, team, role, standup_before(team, moment), moment, moment)


def weekly_plan(team: Team, *, now: datetime, role: str) -> DigestPlan:
    """The weekly report of the latest Monday at the team's standup time: the week before it, Monday 00:00 to
    Monday 00:00 in the team's time zone. It goes on Monday whether or not Monday is a working day."""
    zone = ZoneInfo(team.timezone)
    day = now.astimezone(zone).date()
    day -= timedelta(days=day.weekday())
    if wall_clock(day, team.standup_at, zone) > now:
        day -= timedelta(days=7)
    start, end = wall_clock(day - timedelta(days=7), time(0), zone), wall_clock(day, time(0), zone)
    moment = wall_clock(day, team.standup_at, zone)
    return DigestPlan(DigestKind.WEEKLY, team_audience(team), team, role, start, end, moment)


def monthly_plan(team: Team, *, now: datetime) -> DigestPlan:
    """The monthly process review of the latest 1st at the team's standup time: the calendar month before."""
    zone = ZoneInfo(team.timezone)
    day = now.astimezone(zone).date().replace(day=1)
    if wall_clock(day, team.standup_at, zone) > now:
        day = (day - timedelta(days=1)).replace(day=1)
    previous = (day - timedelta(days=1)).replace(day=1)
    start, end = wall_clock(previous, time(0), zone), wall_clock(day, time(0), zone)
    role = Role.SCRUM_MASTER
    return DigestPlan(DigestKind.MONTHLY, role, team, role, start, end, wall_clock(day, team.standup_at, zone))


def role_teams(roles: tuple[str, ...]) -> list[tuple[str, Team]]:
    """(role, its default team) for these roles, in their order, each team once (its first role)."""
    found = {r.role: r.team for r in RoleDefaultTeam.objects.filter(role__in=roles).select_related("team")}
    seen: set[int] = set()
    pairs = []
    for role in roles:
        team = found.get(role)
        if team is not None and team.pk not in seen:
            seen.add(team.pk)
            pairs.append((role, team))
    return pairs


def digests_planned(kind: str, *, now: datetime, team_name: str = "") -> list[DigestPlan]:
    """Every audience's latest digest of this kind whose moment has come, sent or not; ``team_name`` keeps one
    team's (its daily digest, even if it owns no failures, or what its roles get)."""
    plans: list[DigestPlan | None] = []
    if kind == DigestKind.DAILY:
        owning = Q(pk__in=Failure.objects.filter(is_protected_branch=True).values("owner_team_id"))
        owners = Team.objects.filter(owning | Q(name=team_name) if team_name else owning)
        plans += [daily_plan(team, now=now) for team in owners.order_by("name")]
        plans += [daily_plan(team, now=now, role=role) for role, team in role_teams((Role.SCRUM_MASTER,))]
    elif kind == DigestKind.WEEKLY:
        plans += [weekly_plan(team, now=now, role=role) for role, team in role_teams(STAKEHOLDER_ROLES)]
    else:
        plans += [monthly_plan(team, now=now) for _, team in role_teams((Role.SCRUM_MASTER,))]
    return [p for p in plans if p is not None and (not team_name or p.team.name == team_name)]


def digests_due(*, now: datetime) -> list[DigestPlan]:
    """The digests whose moment has come and that are not stored yet, daily first.

    Daily: each team that owns failures on protected branches, at its standup time in its time zone on its
    working days; the Scrum Master's cross-team digest at the standup of the Scrum Master's team. Weekly:
    Monday at the standup time of each of the Product Owner's, Technical Architect's and Scrum Master's teams.
    Monthly: the 1st at the Scrum Master's team's standup time, for the month before.
    """
    plans = [p for kind in DigestKind.values for p in digests_planned(kind, now=now)]
    if not plans:
        return []
    stored = set(
        Digest.objects.filter(period_start__in={p.period_start for p in plans}).values_list(
            "kind", "audience", "period_start"
        )
    )
    return [p for p in plans if (p.kind, p.audience, p.period_start) not in stored]


def month_before(start: datetime, zone: ZoneInfo) -> datetime:
    """The start of the calendar month before the month starting at ``start``, midnight in ``zone``."""
    day = (start.astimezone(zone).date().replace(day=1) - timedelta(days=1)).replace(day=1)
    return wall_clock(day, time(0), zone)
