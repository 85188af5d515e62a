from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from escalation.api.authentication import HasScope
from escalation.api.filters import FailureFilter
from escalation.api.serializers import (
    EventInputSerializer,
    EventReceiptSerializer,
    FailureDetailSerializer,
    FailureSerializer,
)
from escalation.choices import FailureType, Scope
from escalation.selectors import failure_detail, failures_list
from escalation.services.ingestion import EventInput, IngestResult, event_ingest


class EventView(APIView):
    """Report one CI job outcome."""

    permission_classes = [HasScope]
    required_scope = Scope.INGEST
    lenient_text_fields = ("log_excerpt",)  # bytes that are not UTF-8 become U+FFFD (portal.parsers)

    @extend_schema(
        request=EventInputSerializer,
        responses={201: EventReceiptSerializer, 200: EventReceiptSerializer},
        description=(
            "A failure opens a failure or adds an occurrence to the open one with its fingerprint; a success "
            "resolves the job's open failures as recovered. A repeated delivery (same idempotency key, "
            "or the same source, repository, run, attempt, job and status) answers 200 and stores nothing."
        ),
    )
    def post(self, request):
        serializer = EventInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = EventInput(**serializer.validated_data)
        result = event_ingest(ingest_source=request.user, data=data, now=timezone.now())
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(event_receipt(result, data), status=code)


def event_receipt(result: IngestResult, data: EventInput) -> dict:
    """The answer to an event, as EventReceiptSerializer (the schema) represents it.

    Built as plain values, which the JSON renderer writes as the serializer would (datetimes in ISO 8601
    with Z): serializing it cost a twentieth of an event's CPU on the busiest endpoint.
    """
    failure = result.failure
    warnings = []
    if data.type and data.type not in FailureType.values:
        warnings.append(f"type hint {data.type!r} is not a failure type; classified by the rules")
    return {
        "event_id": result.event.id,
        "duplicate": not result.created,
        "id": failure.id if failure else None,
        "type": str(failure.failure_type) if failure else None,
        "owner": failure.owner_team.name if failure and failure.owner_team else None,
        "sla_due_at": failure.sla_due_at if failure else None,
        "status": str(failure.status) if failure else None,
        "occurrences": failure.occurrence_count if failure else None,
        "recovered": result.recovered_ids,
        "warnings": warnings,
    }


class FailureViewSet(viewsets.ReadOnlyModelViewSet):
    """Failures, newest first. Filter by status, type, team, repository, branch and breached."""

    permission_classes = [HasScope]
    required_scope = Scope.READ
    user_permission = "escalation.view_failure"
    filterset_class = FailureFilter

    def get_queryset(self):
        return failure_detail() if self.action == "retrieve" else failures_list()

    def get_serializer_class(self):
        return FailureDetailSerializer if self.action == "retrieve" else FailureSerializer
