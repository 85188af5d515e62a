"""Reads of the escalation domain."""

from datetime import datetime

from django.db.models import Prefetch, QuerySet

from escalation.models import Failure, TimelineEntry
from escalation.models.failures import OPEN_Q


def failures_list() -> QuerySet[Failure]:
    return Failure.objects.select_related("repository", "owner_team", "secondary_team", "assignee")


def failure_detail() -> QuerySet[Failure]:
    return failures_list().prefetch_related(Prefetch("timeline", queryset=TimelineEntry.objects.order_by("at", "id")))


def failures_breached(queryset: QuerySet[Failure], *, now: datetime) -> QuerySet[Failure]:
    """Open failures past their SLA due time."""
    return queryset.filter(OPEN_Q, sla_due_at__lt=now)


def failures_not_breached(queryset: QuerySet[Failure], *, now: datetime) -> QuerySet[Failure]:
    return queryset.exclude(pk__in=failures_breached(queryset, now=now).values("pk"))
