"""Admin pages of fallouts: the rules (thresholds, windows, scope, tuned by QA, the Scrum Master and Senior
Dev Triage) and the fallouts they opened or proposed, confirmed, dismissed or closed by the Scrum Master
and Senior Dev Triage. Every change goes through the services and the audit log."""

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from escalation.admin import ConfigAdmin, ReadOnlyAdmin, admin_actor, each_row
from escalation.models import Fallout, FalloutRule
from escalation.services.fallout import (
    InvalidFalloutRule,
    fallout_close,
    fallout_confirm,
    fallout_dismiss,
    fallout_rule_check,
)


class FalloutRuleForm(forms.ModelForm):
    class Meta:
        model = FalloutRule
        fields = ["threshold", "window", "scope", "ratio_percent", "min_samples", "is_enabled"]

    def clean(self):
        cleaned = super().clean()
        candidate = FalloutRule(**{**{f: getattr(self.instance, f) for f in ("code", "name")}, **cleaned})
        try:
            fallout_rule_check(candidate)
        except InvalidFalloutRule as exc:
            self.add_error(exc.extra.get("field") or None, exc.detail)
        return cleaned


@admin.register(FalloutRule)
class FalloutRuleAdmin(ConfigAdmin):
    form = FalloutRuleForm
    list_display = [
        "name",
        "code",
        "category",
        "threshold",
        "window",
        "scope",
        "ratio_percent",
        "min_samples",
        "is_enabled",
    ]
    list_filter = ["category", "is_enabled"]
    fields = ["code", "name", "pattern", "category", "owner_roles", *FalloutRuleForm.Meta.fields]
    readonly_fields = ["code", "name", "pattern", "category", "owner_roles"]

    def has_add_permission(self, request):
        return False  # a rule needs its detector: rows come with the code, in a migration

    def has_delete_permission(self, request, obj=None):
        return False


class DismissForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


@admin.register(Fallout)
class FalloutAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "title",
        "rule",
        "category",
        "status",
        "owner_team",
        "failure_count",
        "ticket_key",
        "opened_at",
        "updated_at",
    ]
    list_filter = ["status", "rule", "category"]
    list_select_related = ["rule", "owner_team"]
    search_fields = ["title", "scope_key", "ticket_key"]
    actions = ["confirm", "dismiss", "close"]
    fields = [
        "rule",
        "category",
        "scope_key",
        "title",
        "status",
        "owner_team",
        "figures",
        "triggering_failures",
        "opened_at",
        "updated_at",
        "decided_at",
        "decided_by",
        "decision_reason",
        "ticket",
        "audit_log",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("failures")

    @admin.display(description="failures")
    def failure_count(self, obj: Fallout) -> int:
        return len(obj.failures.all())

    @admin.display(description="figures")
    def figures(self, obj: Fallout):
        rows = ((key.replace("_", " "), value) for key, value in obj.detail.items() if key != "failure_ids")
        return format_html("<dl>{}</dl>", format_html_join("", "<dt>{}</dt><dd>{}</dd>", rows))

    @admin.display(description="triggering failures")
    def triggering_failures(self, obj: Fallout):
        failures = obj.failures.select_related("repository").order_by("id")
        if not failures:
            return "none (the pattern is not about failures)"
        items = (
            (reverse("admin:escalation_failure_change", args=[f.pk]), f.pk, f.failure_type, f.repository.name,
             f.branch, f.job_name, f.get_status_display().lower())
            for f in failures
        )  # fmt: skip
        return format_html("<ul>{}</ul>", format_html_join("", '<li><a href="{}">#{}</a> {} {}:{} {} ({})</li>', items))

    @admin.display(description="ticket")
    def ticket(self, obj: Fallout):
        if obj.ticket_url:
            return format_html('<a href="{}">{}</a>', obj.ticket_url, obj.ticket_key)
        return obj.ticket_key or "-"

    @admin.display(description="audit log")
    def audit_log(self, obj: Fallout):
        url = reverse("admin:portal_auditentry_changelist")
        return format_html('<a href="{}?content_type__model=fallout&object_id={}">decisions on this fallout</a>',
                           url, obj.pk)  # fmt: skip

    def _each(self, request, queryset, call, done: str) -> None:
        each_row(self, request, list(queryset.order_by("id").values_list("id", flat=True)), call, done, "fallout")

    @admin.action(description="Confirm: open the fallout and its ticket", permissions=["decide"])
    def confirm(self, request, queryset):
        actor, now = admin_actor(request), timezone.now()
        self._each(request, queryset, lambda pk: fallout_confirm(fallout_id=pk, actor=actor, now=now), "confirmed")

    @admin.action(description="Dismiss (asks for the reason)", permissions=["decide"])
    def dismiss(self, request, queryset):
        form = DismissForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            actor, now, reason = admin_actor(request), timezone.now(), form.cleaned_data["reason"]
            self._each(
                request, queryset,
                lambda pk: fallout_dismiss(fallout_id=pk, actor=actor, now=now, reason=reason), "dismissed",
            )  # fmt: skip
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Dismiss fallouts",
            "fallouts": queryset.order_by("id"),
            "form": form,
        }
        return TemplateResponse(request, "admin/escalation/fallout/dismiss.html", context)

    @admin.action(description="Close: the follow-up is done", permissions=["decide"])
    def close(self, request, queryset):
        actor, now = admin_actor(request), timezone.now()
        self._each(request, queryset, lambda pk: fallout_close(fallout_id=pk, actor=actor, now=now), "closed")

    def has_decide_permission(self, request):
        return request.user.has_perm("escalation.decide_fallout")
