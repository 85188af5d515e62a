"""Reads of the escalation domain."""

from datetime import datetime

from django.db.models import BooleanField, Count, ExpressionWrapper, Max, Min, Prefetch, Q, QuerySet, Sum
from django.utils import timezone

from escalation.choices import TriageVerdict
from escalation.models import ClassificationRule, Escalation, Failure, TimelineEntry
from escalation.models.failures import OPEN_Q
from escalation.services import sla


def failures_list(*, now: datetime | None = None) -> QuerySet[Failure]:
    """Failures with ``is_breached`` and ``is_at_risk`` as of ``now``."""
    now = now or timezone.now()
    return Failure.objects.select_related("repository", "owner_team", "secondary_team", "assignee").annotate(
        is_breached=ExpressionWrapper(sla.breached_q(now=now), output_field=BooleanField()),
        is_at_risk=ExpressionWrapper(sla.at_risk_q(now=now), output_field=BooleanField()),
    )


def failure_detail() -> QuerySet[Failure]:
    return failures_list().prefetch_related(
        Prefetch("timeline", queryset=TimelineEntry.objects.order_by("at", "id")),
        Prefetch("escalations", queryset=Escalation.objects.order_by("at", "id")),
    )


def failures_breached(queryset: QuerySet[Failure], *, now: datetime) -> QuerySet[Failure]:
    """Open failures past their SLA (sla.breached_q)."""
    return queryset.filter(sla.breached_q(now=now))


def failures_not_breached(queryset: QuerySet[Failure], *, now: datetime) -> QuerySet[Failure]:
    return queryset.exclude(pk__in=failures_breached(queryset, now=now).values("pk"))


# --- classification and triage ---


def failures_awaiting_triage() -> QuerySet[Failure]:
    """Open failures on protected branches whose type nobody has confirmed or corrected, oldest first."""
    return (
        failures_list()
        .select_related("classification_rule")
        .filter(OPEN_Q, triaged_at__isnull=True, triage_due_at__isnull=False)
        .order_by("first_seen_at", "id")
    )


def rules_with_stats() -> QuerySet[ClassificationRule]:
    """Every rule in precedence order with ``matches`` (failures it decided), ``confirmations`` and ``corrections``."""
    verdict = "classified_failures__triage_verdict"
    return ClassificationRule.objects.annotate(
        matches=Count("classified_failures"),
        confirmations=Count("classified_failures", filter=Q(**{verdict: TriageVerdict.CONFIRMED})),
        corrections=Count("classified_failures", filter=Q(**{verdict: TriageVerdict.CORRECTED})),
    ).order_by("stage", "position", "id")


def rule_precision(*, confirmations: int, corrections: int) -> float | None:
    """The share of triaged decisions QA confirmed; None before the first verdict."""
    judged = confirmations + corrections
    return round(confirmations / judged, 4) if judged else None


def signatures_top(*, failures: QuerySet[Failure] | None = None) -> QuerySet:
    """Unique errors, most failures first: ``signature``, ``count``, ``occurrences``, ``first_seen``, ``last_seen``."""
    queryset = Failure.objects.all() if failures is None else failures
    return (
        queryset.exclude(signature="")
        .values("signature")
        .annotate(
            count=Count("id"),
            occurrences=Sum("occurrence_count"),
            first_seen=Min("first_seen_at"),
            last_seen=Max("last_seen_at"),
        )
        .order_by("-count", "-last_seen", "signature")
    )


def signature_teams(*, signatures: list[str]) -> dict[str, list[str]]:
    """The owning teams of each signature's failures, by name."""
    teams: dict[str, list[str]] = {signature: [] for signature in signatures}
    rows = (
        Failure.objects.filter(signature__in=signatures, owner_team__isnull=False)
        .values_list("signature", "owner_team__name")
        .distinct()
        .order_by("signature", "owner_team__name")
    )
    for signature, team in rows:
        teams[signature].append(team)
    return teams


def failures_similar(*, failure: Failure, limit: int = 20) -> QuerySet[Failure]:
    """Other failures with the same error signature, most recent first."""
    if not failure.signature:
        return Failure.objects.none()
    return (
        failures_list().filter(signature=failure.signature).exclude(pk=failure.pk).order_by("-last_seen_at", "-id")
    )[:limit]
