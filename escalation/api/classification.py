"""Classification in the API: the rules with their triage record, and the top error signatures."""

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError

from escalation.api.authentication import HasScope
from escalation.choices import FailureStatus, FailureType, RuleField, RuleStage, Scope
from escalation.models import ClassificationRule, Failure
from escalation.selectors import rule_precision, rules_with_stats, signature_teams, signatures_top


class ClassificationRuleSerializer(serializers.ModelSerializer):
    stage_label = serializers.CharField(source="get_stage_display", read_only=True)
    matches = serializers.IntegerField(read_only=True, help_text="Failures this rule decided")
    confirmations = serializers.IntegerField(read_only=True, help_text="Of those, types QA confirmed in triage")
    corrections = serializers.IntegerField(read_only=True, help_text="Of those, types QA corrected in triage")
    precision = serializers.SerializerMethodField(
        help_text="confirmations / (confirmations + corrections); null before the first verdict"
    )

    class Meta:
        model = ClassificationRule
        fields = [
            "id",
            "name",
            "stage",
            "stage_label",
            "position",
            "field",
            "event_field",
            "pattern",
            "failure_type",
            "tags",
            "is_enabled",
            "description",
            "version",
            "matches",
            "confirmations",
            "corrections",
            "precision",
        ]

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_precision(self, rule: ClassificationRule) -> float | None:
        return rule_precision(confirmations=rule.confirmations, corrections=rule.corrections)


class ClassificationRuleFilter(django_filters.FilterSet):
    type = django_filters.ChoiceFilter(field_name="failure_type", choices=FailureType.choices)
    stage = django_filters.TypedChoiceFilter(choices=RuleStage.choices, coerce=int)
    field = django_filters.ChoiceFilter(choices=RuleField.choices)
    enabled = django_filters.BooleanFilter(field_name="is_enabled")

    class Meta:
        model = ClassificationRule
        fields = ["type", "stage", "field", "enabled"]


class ClassificationRuleViewSet(viewsets.ReadOnlyModelViewSet):
    """Classification rules in precedence order (stage, position), with matches, confirmations, corrections
    and precision from QA's triage."""

    permission_classes = [HasScope]
    required_scope = Scope.READ
    user_permission = "escalation.view_classificationrule"
    serializer_class = ClassificationRuleSerializer
    filterset_class = ClassificationRuleFilter

    def get_queryset(self):
        return rules_with_stats()


class SignatureSerializer(serializers.Serializer):
    signature = serializers.CharField(help_text="The normalised error line")
    count = serializers.IntegerField(help_text="Failures with this signature")
    occurrences = serializers.IntegerField(help_text="CI events those failures counted")
    teams = serializers.ListField(child=serializers.CharField(), help_text="Their owning teams")
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()


class SignatureFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=FailureStatus.choices)
    type = django_filters.ChoiceFilter(field_name="failure_type", choices=FailureType.choices)
    repository = django_filters.CharFilter(field_name="repository__name")
    team = django_filters.CharFilter(field_name="owner_team__name", lookup_expr="iexact")
    since = django_filters.IsoDateTimeFilter(
        field_name="last_seen_at", lookup_expr="gte", help_text="Failures last seen at or after this time"
    )

    class Meta:
        model = Failure
        fields = ["status", "type", "repository", "team", "since"]


class SignatureViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The top error signatures (unique errors): the most failures first."""

    permission_classes = [HasScope]
    required_scope = Scope.READ
    user_permission = "escalation.view_failure"
    serializer_class = SignatureSerializer
    filterset_class = SignatureFilter  # documents the parameters; get_queryset applies them before grouping

    def get_queryset(self):
        filterset = SignatureFilter(self.request.query_params, queryset=Failure.objects.all())
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        return signatures_top(failures=filterset.qs)

    def filter_queryset(self, queryset):
        return queryset  # already filtered: the failures are filtered, then grouped by signature

    @extend_schema(responses=SignatureSerializer(many=True))
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        teams = signature_teams(signatures=[row["signature"] for row in page])
        rows = [{**row, "teams": teams[row["signature"]]} for row in page]
        return self.get_paginated_response(SignatureSerializer(rows, many=True).data)
