"""Reads of fallouts for the API and the admin."""

from django.db.models import Prefetch, QuerySet

from escalation.models import Failure, Fallout


def fallouts_list() -> QuerySet[Fallout]:
    """Fallouts newest first, with their rule and the ids of their triggering failures in two more queries."""
    return (
        Fallout.objects.select_related("rule")
        .prefetch_related(Prefetch("failures", queryset=Failure.objects.only("id").order_by("id")))
        .order_by("-opened_at", "-id")
    )
