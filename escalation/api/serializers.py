import contextlib

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from escalation.api.fields import REVALIDATE, QuickListField, StrictCharField, StrictIntegerField
from escalation.choices import JobStatus
from escalation.models import Escalation, Failure, FailureOccurrence, TimelineEntry


class FieldsBoundOnce:
    """Bind the declared fields once per class rather than deep-copy them for every instance.

    DRF copies each declared field per serializer instance; on the events endpoint, which builds two
    serializers per request, that copying cost more CPU than the rest of the validation. These fields
    keep no per-request state and read no context, so one bound set serves every request.
    """

    @property
    def fields(self):
        cls = type(self)
        bound = cls.__dict__.get("_fields_bound_once")
        if bound is None:
            bound = super().fields
            cls._fields_bound_once = bound
        return bound


QUICK_FIELDS = (StrictCharField, QuickListField)


class QuickValidation(FieldsBoundOnce):
    """Validate a body that DRF would accept in one pass over its fields; any value that needs DRF's word
    sends the whole body through DRF's own validation, which names every problem.

    The values are DRF's: the ``quick`` of StrictCharField and QuickListField returns what their
    run_validation would, the other fields run their own run_validation. What DRF's loop adds around
    that (the field's value looked up, its errors gathered, the value set under its source) cost as much
    as the checks themselves.
    """

    def to_internal_value(self, data):
        plan = self._quick_plan()
        if plan is not None and type(data) is dict:  # not a QueryDict, whose values DRF reads its own way
            values = _quick_values(plan, data)
            if values is not None:
                return values
        return super().to_internal_value(data)

    def _quick_plan(self) -> list | None:
        """(name, field, its quick check or None) per field, once per class; None when a field is read-only,
        has another source or a ``validate_<name>`` method, which only DRF's loop applies."""
        cls = type(self)
        if "_quick_plan_once" not in cls.__dict__:
            plan = []
            for name, field in self.fields.items():
                if field.read_only or field.source != name or hasattr(self, f"validate_{name}"):
                    plan = None
                    break
                quick = field.quick if isinstance(field, QUICK_FIELDS) and field.checks_are_drfs() else None
                plan.append((name, field, quick))
            cls._quick_plan_once = plan
        return cls._quick_plan_once


def _quick_values(plan: list, data: dict) -> dict | None:
    values = {}
    for name, field, quick in plan:
        if name not in data:
            if field.required:
                return None
            with contextlib.suppress(SkipField):  # no default: DRF leaves the field out too
                values[name] = field.get_default()
            continue
        if quick is not None:
            value = quick(data[name])
            if value is REVALIDATE:
                return None
        else:
            try:
                value = field.run_validation(data[name])
            except (serializers.ValidationError, DjangoValidationError, SkipField):
                return None
        values[name] = value
    return values


class EventInputSerializer(QuickValidation, serializers.Serializer):
    """A CI job outcome. Unknown keys are refused so that a misspelt field is not silently lost."""

    source = StrictCharField(max_length=100, help_text="The CI system, e.g. jenkins or github-actions")
    repository = StrictCharField(max_length=255)
    branch = StrictCharField(max_length=255)
    commit = StrictCharField(max_length=64)
    commit_author = StrictCharField(max_length=254, allow_blank=True, required=False, default="")
    run_id = StrictCharField(max_length=200)
    # The column is a PostgreSQL integer: a larger attempt must be refused here, not fail the insert.
    attempt = StrictIntegerField(min_value=1, max_value=2**31 - 1, required=False, default=1)
    job = StrictCharField(max_length=255)
    status = serializers.ChoiceField(choices=JobStatus.choices)
    step = StrictCharField(max_length=255, allow_blank=True, required=False, default="")
    type = StrictCharField(
        max_length=32, allow_blank=True, required=False, default="", help_text="Type hint; wins when valid"
    )
    log_excerpt = StrictCharField(allow_blank=True, required=False, default="", trim_whitespace=False)
    url = serializers.URLField(max_length=500, allow_blank=True, required=False, default="")
    runner = StrictCharField(max_length=200, allow_blank=True, required=False, default="")
    changed_files = QuickListField(
        child=StrictCharField(max_length=1000),
        required=False,
        allow_null=True,
        default=None,
        max_length=10000,
    )
    started_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    finished_at = serializers.DateTimeField(
        required=False, allow_null=True, default=None, help_text="The SLA clock starts here"
    )
    idempotency_key = StrictCharField(max_length=255, allow_blank=True, required=False, default="")

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({key: ["unknown field"] for key in unknown})
        return super().to_internal_value(data)


class EventReceiptSerializer(FieldsBoundOnce, serializers.Serializer):
    event_id = serializers.IntegerField()
    duplicate = serializers.BooleanField()
    id = serializers.IntegerField(allow_null=True, help_text="The failure's id")
    type = serializers.CharField(allow_null=True)
    owner = serializers.CharField(allow_null=True)
    sla_due_at = serializers.DateTimeField(allow_null=True)
    status = serializers.CharField(allow_null=True, help_text="The failure's status")
    occurrences = serializers.IntegerField(allow_null=True)
    recovered = serializers.ListField(child=serializers.IntegerField(), help_text="Failures this success resolved")
    warnings = serializers.ListField(child=serializers.CharField())


class TimelineEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = TimelineEntry
        fields = ["at", "kind", "actor", "source", "message", "data"]


class OccurrenceSerializer(serializers.ModelSerializer):
    run_id = serializers.CharField(source="event.job.run.run_id")
    attempt = serializers.IntegerField(source="event.job.run.attempt")
    commit = serializers.CharField(source="event.job.run.commit_sha")
    url = serializers.CharField(source="event.job.url")

    class Meta:
        model = FailureOccurrence
        fields = ["seen_at", "run_id", "attempt", "commit", "url"]


class FailureSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="failure_type")
    repository = serializers.CharField(source="repository.name")
    job = serializers.CharField(source="job_name")
    owner = serializers.CharField(source="owner_team.name", allow_null=True, default=None)
    secondary_owner = serializers.CharField(source="secondary_team.name", allow_null=True, default=None)
    assignee = serializers.CharField(source="assignee.name", allow_null=True, default=None)
    breached = serializers.BooleanField(source="is_breached", help_text="Open and past its SLA (paused time excluded)")
    at_risk = serializers.BooleanField(source="is_at_risk", help_text="75 % of the SLA budget spent, not breached")

    class Meta:
        model = Failure
        fields = [
            "id",
            "type",
            "status",
            "resolution",
            "repository",
            "branch",
            "job",
            "owner",
            "secondary_owner",
            "assignee",
            "fingerprint",
            "first_seen_at",
            "last_seen_at",
            "occurrence_count",
            "sla_due_at",
            "triage_due_at",
            "at_risk_at",
            "breached",
            "at_risk",
            "breached_at",
            "escalation_level",
            "paused_at",
            "is_complex",
            "resolution_plan",
            "resolution_plan_due",
            "ticket_key",
            "ticket_url",
            "retry_advice_count",
            "retries_advised",
            "is_protected_branch",
            "classified_by",
            "classification_rule_version",
            "classification_text",
            "tags",
            "signature",
            "triage_verdict",
            "triaged_at",
            "acknowledged_at",
            "resolved_at",
            "resolution_note",
        ]


class EscalationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Escalation
        fields = ["step", "due_at", "at", "group", "recipients"]


class FailureDetailSerializer(FailureSerializer):
    timeline = TimelineEntrySerializer(many=True, read_only=True)
    escalations = EscalationSerializer(many=True, read_only=True)
    recent_occurrences = serializers.SerializerMethodField()

    class Meta(FailureSerializer.Meta):
        fields = [*FailureSerializer.Meta.fields, "matrix_snapshot", "escalations", "timeline", "recent_occurrences"]

    @extend_schema_field(OccurrenceSerializer(many=True))
    def get_recent_occurrences(self, failure: Failure):
        occurrences = failure.occurrences.select_related("event__job__run").order_by("-seen_at", "-id")[:20]
        return OccurrenceSerializer(occurrences, many=True).data
