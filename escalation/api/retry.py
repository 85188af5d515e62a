"""POST /api/v1/retry-advice/: CI asks whether to retry a failed job (README "Retry advice")."""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from escalation.api.authentication import HasScope
from escalation.api.fields import StrictCharField, StrictIntegerField
from escalation.choices import FailureType, JobStatus, Scope
from escalation.models import RetryAdvice
from escalation.services.retry import RetryQuestion, retry_advice
from portal.errors import BadInput

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY_LENGTH = RetryAdvice._meta.get_field("idempotency_key").max_length


class _NoUnknownKeys:
    """Refuse keys the serializer does not declare, so that a misspelt field is not silently lost."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({key: ["unknown field"] for key in unknown})
        return super().to_internal_value(data)


class OtherJobSerializer(_NoUnknownKeys, serializers.Serializer):
    name = StrictCharField(max_length=255)
    status = serializers.ChoiceField(
        choices=JobStatus.choices, error_messages={"invalid_choice": "{input!r} is not success or failure"}
    )


class RetryAdviceInputSerializer(_NoUnknownKeys, serializers.Serializer):
    """The question. One of ``failure_type`` and ``log_excerpt`` is required; a given type wins."""

    repository = StrictCharField(max_length=255)
    job = StrictCharField(max_length=255)
    # The column is a PostgreSQL integer: a larger attempt must be refused here, not fail the insert.
    attempt = StrictIntegerField(min_value=1, max_value=2**31 - 1, help_text="The failed run's attempt; the first is 1")
    failure_type = serializers.ChoiceField(
        choices=FailureType.choices,
        allow_blank=True,
        required=False,
        default="",
        error_messages={"invalid_choice": "{input!r} is not a failure type"},
    )
    log_excerpt = StrictCharField(
        allow_blank=True, required=False, default="", trim_whitespace=False, help_text="Classified by the rules"
    )
    step = StrictCharField(max_length=255, allow_blank=True, required=False, default="")
    branch = StrictCharField(max_length=255, allow_blank=True, required=False, default="")
    run_id = StrictCharField(max_length=200, allow_blank=True, required=False, default="")
    other_jobs = serializers.ListField(
        child=OtherJobSerializer(),
        required=False,
        default=None,
        max_length=10000,
        help_text="The run's other jobs; without them, the jobs the portal has stored for the run",
    )

    def validate(self, attrs):
        if not attrs["failure_type"] and not attrs["log_excerpt"].strip():
            raise serializers.ValidationError(
                {"failure_type": ["give failure_type or log_excerpt (classified by the rules); neither was given"]}
            )
        return attrs


class RetryAdviceAnswerSerializer(serializers.ModelSerializer):
    failure = serializers.IntegerField(source="failure_id", allow_null=True, help_text="The failure it concerns")
    job = serializers.CharField(source="job_name")
    duplicate = serializers.SerializerMethodField(help_text="A repeated Idempotency-Key: the stored answer")

    class Meta:
        model = RetryAdvice
        fields = [
            "retry",
            "delay_seconds",
            "max_attempts",
            "reason",
            "id",
            "failure",
            "failure_type",
            "classified_by",
            "repository",
            "job",
            "attempt",
            "asked_at",
            "duplicate",
        ]

    def get_duplicate(self, advice) -> bool:
        return self.context.get("duplicate", False)


class RetryAdviceView(APIView):
    """Should CI retry this failed job? The matrix row's retry policy answers; every answer is recorded."""

    permission_classes = [HasScope]
    required_scope = Scope.INGEST
    lenient_text_fields = ("log_excerpt",)  # bytes that are not UTF-8 become U+FFFD (portal.parsers)

    @extend_schema(
        request=RetryAdviceInputSerializer,
        responses={201: RetryAdviceAnswerSerializer, 200: RetryAdviceAnswerSerializer},
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="The same key from the same source answers the stored advice (200) and counts nothing",
            )
        ],
        description=(
            "Retry policy of the failure type's matrix row: ci_runner and test_environment up to 3 retries, "
            "database_connectivity 2 while the run's other jobs succeed, performance_regression 1 while no "
            "infrastructure failure is open on the repository, every other type never. Attempt N (the first "
            "run is 1) may be retried while N <= max_attempts, after retry_backoff_seconds * 2^(N-1) seconds."
        ),
    )
    def post(self, request):
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        if len(key) > _KEY_LENGTH:
            raise BadInput(f"the {IDEMPOTENCY_HEADER} header is longer than {_KEY_LENGTH} characters")
        serializer = RetryAdviceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        question = RetryQuestion(**serializer.validated_data, idempotency_key=key)
        answer = retry_advice(ingest_source=request.user, question=question, now=timezone.now())
        data = RetryAdviceAnswerSerializer(answer.advice, context={"duplicate": not answer.created}).data
        return Response(data, status=status.HTTP_201_CREATED if answer.created else status.HTTP_200_OK)
