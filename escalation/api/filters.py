import django_filters
from django import forms
from django.utils import timezone

from escalation.choices import FailureStatus, FailureType
from escalation.models import Failure
from escalation.selectors import failures_breached, failures_not_breached


class FailureFilterForm(forms.Form):
    def clean_breached(self):
        # django-filter's boolean widget reads an unknown word as "no filter"; refuse it instead.
        raw = self.data.get("breached", "")
        if raw and raw.lower() not in {"true", "false", "1", "0"}:
            raise forms.ValidationError(f"must be true or false, not {raw!r}")
        return self.cleaned_data["breached"]


class FailureFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=FailureStatus.choices)
    type = django_filters.ChoiceFilter(field_name="failure_type", choices=FailureType.choices)
    team = django_filters.CharFilter(
        field_name="owner_team__name", lookup_expr="iexact", help_text="Owning team's name"
    )
    repository = django_filters.CharFilter(field_name="repository__name")
    branch = django_filters.CharFilter()
    breached = django_filters.BooleanFilter(method="filter_breached", help_text="Open and past the SLA due time")
    signature = django_filters.CharFilter(help_text="The error signature (GET /api/v1/signatures/)")

    class Meta:
        model = Failure
        fields = ["status", "type", "team", "repository", "branch", "breached", "signature"]
        form = FailureFilterForm

    def filter_breached(self, queryset, name, value):
        now = timezone.now()
        return failures_breached(queryset, now=now) if value else failures_not_breached(queryset, now=now)
