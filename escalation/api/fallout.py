"""Fallouts in the API: what the patterns opened or proposed, with their triggering failures."""

import django_filters
from rest_framework import serializers, viewsets

from escalation.api.authentication import HasScope
from escalation.choices import FalloutScope, FalloutStatus, Scope
from escalation.models import Fallout, FalloutRule
from escalation.services.fallout import fallouts_list


class FalloutSerializer(serializers.ModelSerializer):
    rule = serializers.SlugRelatedField(slug_field="code", read_only=True, help_text="The fallout rule's code")
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    scope = serializers.ChoiceField(
        source="rule.scope", choices=FalloutScope.choices, read_only=True, help_text="What the scope key is"
    )
    failure_ids = serializers.PrimaryKeyRelatedField(
        source="failures", many=True, read_only=True, help_text="The failures that triggered it"
    )

    class Meta:
        model = Fallout
        fields = [
            "id",
            "rule",
            "rule_name",
            "category",
            "scope",
            "scope_key",
            "status",
            "title",
            "detail",
            "ticket_key",
            "ticket_url",
            "opened_at",
            "updated_at",
            "decided_at",
            "decision_reason",
            "failure_ids",
        ]


class FalloutFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=FalloutStatus.choices)
    rule = django_filters.ModelChoiceFilter(
        queryset=FalloutRule.objects.all(), to_field_name="code", help_text="The fallout rule's code"
    )

    class Meta:
        model = Fallout
        fields = ["status", "rule"]


class FalloutViewSet(viewsets.ReadOnlyModelViewSet):
    """Fallouts, newest first. Filter by status and rule (its code)."""

    permission_classes = [HasScope]
    required_scope = Scope.READ
    user_permission = "escalation.view_fallout"
    filterset_class = FalloutFilter
    serializer_class = FalloutSerializer

    def get_queryset(self):
        return fallouts_list()
