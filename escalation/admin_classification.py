"""Admin pages of classification and triage: rules (edited through a preview, tried on pasted text),
rule changes, rule versions and the QA triage queue. Every change goes through the services."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from escalation.admin import ReadOnlyAdmin, admin_actor, each_row
from escalation.choices import FailureType, RuleChangeKind, RuleChangeStatus, RuleStage
from escalation.models import ClassificationRule, ClassificationRuleVersion, FailureAwaitingTriage, RuleChange
from escalation.selectors import failures_awaiting_triage, rule_precision, rules_with_stats
from escalation.services.classification import FALLBACK, TYPE_HINT
from escalation.services.failures import failure_correct_type
from escalation.services.rule_changes import (
    RULE_FIELDS,
    rule_change_apply,
    rule_change_discard,
    rule_change_repreview,
    rule_change_submit,
    rule_try,
    rule_validate,
)
from escalation.services.triage import failures_confirm_type
from portal.errors import PortalError

# --- rules ---


class RuleForm(forms.ModelForm):
    """The rule as QA edits it. Validation is the service's; "Try it" runs the rule on pasted text, saving nothing."""

    stage = forms.TypedChoiceField(
        choices=RuleStage.choices,
        coerce=int,
        required=False,
        help_text="An earlier stage always wins: infrastructure causes in the log, other log patterns, names, "
        "generic summaries",
    )
    tags = forms.CharField(
        required=False, help_text="Comma-separated tags the failure gets, e.g. rate_limited, flaky_suspect"
    )
    sample_text = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 100}),
        label="Sample text",
        help_text="Paste a log excerpt (or a job name, step, changed files) and press “Try it”: nothing is saved",
    )

    class Meta:
        model = ClassificationRule
        fields = [*RULE_FIELDS, "sample_text"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.try_result = None
        self.try_error = ""
        if self.instance.pk and not self.is_bound:
            self.initial["tags"] = ", ".join(self.instance.tags or [])

    def clean_stage(self):
        stage = self.cleaned_data.get("stage")
        if stage in (None, ""):
            return self.instance.stage if self.instance.pk else RuleStage.LOG
        return stage

    def clean_tags(self):
        return [tag.strip() for tag in (self.cleaned_data.get("tags") or "").split(",") if tag.strip()]

    def proposed(self) -> dict:
        return {name: self.cleaned_data.get(name) for name in RULE_FIELDS if name in self.cleaned_data}

    def clean(self):
        cleaned = super().clean()
        if self.is_trying:
            return cleaned
        if self.errors:
            return cleaned
        try:
            rule_validate(proposed=self.proposed(), rule=self.instance if self.instance.pk else None)
        except PortalError as exc:
            field = exc.extra.get("field")
            self.add_error(field if field in self.fields else None, exc.detail)
        return cleaned

    @property
    def is_trying(self) -> bool:
        return "_try" in self.data

    def is_valid(self) -> bool:
        """A "Try it" press is never valid: the page comes back with the result and nothing is saved."""
        valid = super().is_valid()
        if not self.is_trying:
            return valid
        try:
            self.try_result = rule_try(
                proposed=self.proposed(),
                rule=self.instance if self.instance.pk else None,
                sample=self.cleaned_data.get("sample_text") or "",
            )
        except PortalError as exc:
            self.try_error = exc.detail
        return False


@admin.register(ClassificationRule)
class ClassificationRuleAdmin(admin.ModelAdmin):
    """Rules in precedence order with their record; saving or deleting one first previews its effect."""

    form = RuleForm
    list_display = [
        "stage",
        "position",
        "name",
        "field",
        "failure_type",
        "tag_list",
        "is_enabled",
        "version",
        "matches",
        "confirmations",
        "corrections",
        "precision",
    ]
    list_display_links = ["name"]
    list_filter = ["stage", "field", "failure_type", "is_enabled"]
    search_fields = ["name", "pattern", "description"]
    readonly_fields = ["version", "record", "history"]
    fieldsets = [
        (None, {"fields": ["name", "stage", "position", "field", "event_field", "pattern", "failure_type", "tags"]}),
        (None, {"fields": ["is_enabled", "description", "version", "record"]}),
        ("Try it", {"fields": ["sample_text"]}),
        ("History", {"fields": ["history"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        return rules_with_stats()

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a deletion is previewed one rule at a time
        return actions

    @admin.display(description="tags")
    def tag_list(self, rule):
        return ", ".join(rule.tags or []) or "-"

    @admin.display(description="matches", ordering="matches")
    def matches(self, rule):
        return rule.matches

    @admin.display(description="confirmed", ordering="confirmations")
    def confirmations(self, rule):
        return rule.confirmations

    @admin.display(description="corrected", ordering="corrections")
    def corrections(self, rule):
        return rule.corrections

    @admin.display(description="precision")
    def precision(self, rule):
        value = rule_precision(confirmations=rule.confirmations, corrections=rule.corrections)
        return "-" if value is None else f"{value:.0%}"

    @admin.display(description="record")
    def record(self, rule):
        if rule.pk is None:
            return "-"
        stats = rules_with_stats().get(pk=rule.pk)
        precision = rule_precision(confirmations=stats.confirmations, corrections=stats.corrections)
        shown = "no verdict yet" if precision is None else f"{precision:.0%}"
        return (
            f"{stats.matches} failures decided, {stats.confirmations} confirmed, {stats.corrections} corrected "
            f"in triage; precision {shown}"
        )

    @admin.display(description="versions")
    def history(self, rule):
        if rule.pk is None:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (v.version, v.kind, f"{v.changed_at:%Y-%m-%d %H:%M}", v.actor_label, v.state.get("pattern", ""))
                for v in rule.versions.order_by("-version", "-id")[:20]
            ),
        )
        return format_html("<table><tr><th>version</th><th>change</th><th>at</th><th>by</th><th>pattern</th></tr>{}"
                           "</table>", rows)  # fmt: skip

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        form = context["adminform"].form
        context.update(
            try_result=form.try_result,
            try_error=form.try_error,
            tried=form.is_bound and form.is_trying,
            preview_days=settings.PORTAL_RULE_PREVIEW_DAYS,
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change):
        kind = RuleChangeKind.UPDATE if change else RuleChangeKind.CREATE
        rule = ClassificationRule.objects.get(pk=obj.pk) if change else None
        request._rule_change = self._submit(request, kind=kind, rule=rule, proposed=form.proposed())
        applied = request._rule_change
        if applied is not None and applied.status == RuleChangeStatus.APPLIED and applied.rule_id:
            obj.pk, obj.version = applied.rule_id, applied.applied_version

    def save_related(self, request, form, formsets, change):
        pass  # a rule has no related rows; the change service saved what there is

    def delete_model(self, request, obj):
        request._rule_change = self._submit(request, kind=RuleChangeKind.DELETE, rule=obj, proposed={})

    def _submit(self, request, *, kind, rule, proposed) -> RuleChange | None:
        try:
            return rule_change_submit(
                kind=kind, rule=rule, proposed=proposed, actor=admin_actor(request), now=timezone.now()
            )
        except PortalError as exc:
            self.message_user(request, exc.detail, level=messages.ERROR)
            return None

    # Django's own change history would claim a save that may wait for its preview; the audit log is the record.
    def log_addition(self, request, obj, message):
        return None

    def log_change(self, request, obj, message):
        return None

    def log_deletions(self, request, queryset):
        return None

    def response_add(self, request, obj, post_url_continue=None):
        return self._response(request) or super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        return self._response(request) or super().response_change(request, obj)

    def response_delete(self, request, obj_display, obj_id):
        return self._response(request) or super().response_delete(request, obj_display, obj_id)

    def _response(self, request):
        """Where to go after a save: the change's preview unless it was applied at once."""
        change = getattr(request, "_rule_change", None)
        if change is None:
            return HttpResponseRedirect(request.path)
        if change.status != RuleChangeStatus.APPLIED:
            if change.status == RuleChangeStatus.PREVIEWING:
                text = f"Rule change #{change.pk} is being previewed as a task; this page shows its progress."
            else:
                text = (
                    f"Nothing is saved yet: rule change #{change.pk} would change {change.affected_count} failure(s) "
                    f"of the last {settings.PORTAL_RULE_PREVIEW_DAYS} days. Apply or discard it below."
                )
            self.message_user(request, text, level=messages.WARNING)
            return HttpResponseRedirect(reverse("admin:escalation_rulechange_change", args=[change.pk]))
        done = "deleted" if change.kind == RuleChangeKind.DELETE else f"saved as version {change.applied_version}"
        self.message_user(
            request,
            f"Rule {change.rule_name!r} {done}; the preview found no failure of the last "
            f"{settings.PORTAL_RULE_PREVIEW_DAYS} days whose type would change."
            if change.affected_count == 0
            else f"Rule {change.rule_name!r} {done}; {change.affected_count} failure(s) reclassified.",
        )
        return HttpResponseRedirect(reverse("admin:escalation_classificationrule_changelist"))


@admin.register(ClassificationRuleVersion)
class ClassificationRuleVersionAdmin(ReadOnlyAdmin):
    list_display = ["rule_name", "version", "kind", "changed_at", "actor_label", "rule_change"]
    list_filter = ["kind"]
    search_fields = ["rule_name"]
    list_select_related = ["rule_change"]


# --- rule changes: the preview page ---


@admin.register(RuleChange)
class RuleChangeAdmin(ReadOnlyAdmin):
    """Each change's preview: the failures whose type would change, before and after; apply or discard."""

    list_display = ["id", "rule_name", "kind", "status", "progress", "affected_count", "actor_label", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["rule_name"]
    effects_per_page = 100

    @admin.display(description="progress")
    def progress(self, change):
        if change.status in (RuleChangeStatus.PREVIEWING, RuleChangeStatus.APPLYING):
            return f"{change.progress_done} of {change.progress_total}"
        return "-"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:change_id>/apply/", wrap(self._action(rule_change_apply, "applied")), name="rulechange_apply"),
            path(
                "<int:change_id>/discard/",
                wrap(self._action(rule_change_discard, "discarded")),
                name="rulechange_discard",
            ),
            path(
                "<int:change_id>/preview-again/",
                wrap(self._action(rule_change_repreview, "previewed again")),
                name="rulechange_repreview",
            ),
            *super().get_urls(),
        ]

    def _action(self, service, done: str):
        @require_POST
        def view(request, change_id: int):
            try:
                change = service(change_id=change_id, actor=admin_actor(request), now=timezone.now())
            except PortalError as exc:
                self.message_user(request, exc.detail, level=messages.ERROR)
            else:
                self.message_user(request, f"Rule change #{change.pk} {done}: {change.get_status_display().lower()}.")
            return HttpResponseRedirect(reverse("admin:escalation_rulechange_change", args=[change_id]))

        return view

    def change_view(self, request, object_id, form_url="", extra_context=None):
        change = get_object_or_404(RuleChange.objects.select_related("rule"), pk=object_id)
        if not self.has_view_permission(request, change):
            raise PermissionDenied
        effects = change.effects.select_related("failure__repository").order_by("id")
        page = Paginator(effects, self.effects_per_page).get_page(request.GET.get("p"))
        before = change.rule and {name: getattr(change.rule, name) for name in RULE_FIELDS}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Rule change #{change.pk}: {change.get_kind_display().lower()} {change.rule_name}",
            "change": change,
            "fields": [
                (name, before.get(name) if before else None, change.proposed.get(name) if change.proposed else None)
                for name in RULE_FIELDS
            ],
            "page": page,
            "is_running": change.status in (RuleChangeStatus.PREVIEWING, RuleChangeStatus.APPLYING),
            "can_apply": request.user.has_perm("escalation.apply_rulechange")
            and change.status == RuleChangeStatus.PREVIEWED,
            "can_discard": change.status
            in (RuleChangeStatus.PREVIEWING, RuleChangeStatus.PREVIEWED, RuleChangeStatus.FAILED),
            "can_repreview": change.status in (RuleChangeStatus.PREVIEWED, RuleChangeStatus.FAILED),
            "preview_days": settings.PORTAL_RULE_PREVIEW_DAYS,
        }
        return TemplateResponse(request, "admin/escalation/rulechange/preview.html", context)


# --- the triage queue ---


class TriageActionForm(ActionForm):
    failure_type = forms.ChoiceField(choices=[("", "(type for 'correct type')"), *FailureType.choices], required=False)
    note = forms.CharField(required=False, widget=forms.TextInput(attrs={"placeholder": "note"}))


class UnclassifiedFilter(admin.SimpleListFilter):
    title = "classification"
    parameter_name = "classified"

    def lookups(self, request, model_admin):
        return [
            ("fallback", "Unclassified (no rule matched)"),
            ("rule", "By a rule"),
            ("hint", "By the CI's type hint"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "fallback":
            return queryset.filter(classified_by=FALLBACK)
        if self.value() == "rule":
            return queryset.filter(classification_rule__isnull=False)
        if self.value() == "hint":
            return queryset.filter(classified_by=TYPE_HINT)
        return queryset


class OverTargetFilter(admin.SimpleListFilter):
    title = "triage target"
    parameter_name = "over_target"

    def lookups(self, request, model_admin):
        return [("yes", f"Over {settings.PORTAL_TRIAGE_MINUTES} minutes"), ("no", "Within the target")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(triage_due_at__lt=now)
        if self.value() == "no":
            return queryset.filter(triage_due_at__gte=now)
        return queryset


@admin.register(FailureAwaitingTriage)
class TriageQueueAdmin(ReadOnlyAdmin):
    """Failures awaiting triage, oldest first: acknowledge (the type is right) or correct the type in one click."""

    list_display = [
        "id",
        "waiting",
        "shown_type",
        "repository",
        "branch",
        "job_name",
        "evidence",
        "owner_team",
        "triage",
    ]
    list_display_links = ["id"]
    list_filter = [UnclassifiedFilter, OverTargetFilter, "failure_type", "owner_team"]
    search_fields = ["repository__name", "job_name", "classification_text"]
    list_select_related = ["repository", "owner_team", "classification_rule"]
    ordering = ["first_seen_at", "id"]
    action_form = TriageActionForm
    actions = ["confirm_type", "correct_type"]

    def get_queryset(self, request):
        return failures_awaiting_triage()

    # The queue shows failures: whoever may see failures may see it; changes go through the services.
    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("escalation.view_failure")

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_confirm_permission(self, request):
        return request.user.has_perm("escalation.confirm_failure_type")

    def has_correct_permission(self, request):
        return request.user.has_perm("escalation.correct_failure_type")

    @admin.display(description="waiting", ordering="first_seen_at")
    def waiting(self, failure):
        now = timezone.now()
        minutes = int((now - failure.first_seen_at) / timedelta(minutes=1))
        target = settings.PORTAL_TRIAGE_MINUTES
        if failure.triage_due_at and failure.triage_due_at < now:
            return format_html('<strong style="color:#ba2121">{} min (target {}): {} over</strong>',
                               minutes, target, minutes - target)  # fmt: skip
        return f"{minutes} min (target {target})"

    @admin.display(description="type", ordering="failure_type")
    def shown_type(self, failure):
        if failure.classified_by == FALLBACK:
            return format_html("<em>unclassified</em> ({})", failure.failure_type)
        return failure.get_failure_type_display()

    @admin.display(description="evidence")
    def evidence(self, failure):
        if failure.classified_by == FALLBACK:
            return "no rule matched"
        if failure.classified_by == TYPE_HINT:
            return "the CI's type hint"
        version = f" v{failure.classification_rule_version}" if failure.classification_rule_version else ""
        tags = f" [{', '.join(failure.tags)}]" if failure.tags else ""
        return format_html("<b>{}{}</b>{}: <code>{}</code>", failure.classified_by, version, tags,
                           failure.classification_text[:200])  # fmt: skip

    @admin.display(description="triage")
    def triage(self, failure):
        confirm = reverse("admin:triage_confirm", args=[failure.pk])
        correct = reverse("admin:triage_correct", args=[failure.pk])
        options = format_html_join("", '<option value="{}">{}</option>', FailureType.choices)
        return format_html(
            '<button type="submit" class="button" formaction="{}" name="_triage" value="confirm">Acknowledge</button> '
            '<select name="type_{}" aria-label="correct type to"><option value="">correct to…</option>{}</select> '
            '<button type="submit" class="button" formaction="{}" name="_triage" value="correct">Correct</button>',
            confirm,
            failure.pk,
            options,
            correct,
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:failure_id>/confirm/", wrap(self.confirm_view), name="triage_confirm"),
            path("<int:failure_id>/correct/", wrap(self.correct_view), name="triage_correct"),
            *super().get_urls(),
        ]

    def _back(self, request):
        return HttpResponseRedirect(reverse("admin:escalation_failureawaitingtriage_changelist"))

    def confirm_view(self, request, failure_id: int):
        if request.method != "POST":
            return self._back(request)
        self._confirm(request, [failure_id])
        return self._back(request)

    def correct_view(self, request, failure_id: int):
        if request.method != "POST":
            return self._back(request)
        self._correct(request, [failure_id], request.POST.get(f"type_{failure_id}", ""))
        return self._back(request)

    @admin.action(description="Acknowledge: the type is right", permissions=["confirm"])
    def confirm_type(self, request, queryset):
        self._confirm(request, list(queryset.values_list("id", flat=True)))

    @admin.action(description="Correct type to the chosen type", permissions=["correct"])
    def correct_type(self, request, queryset):
        self._correct(request, list(queryset.values_list("id", flat=True)), request.POST.get("failure_type", ""))

    def _confirm(self, request, failure_ids: list[int]) -> None:
        try:
            count = failures_confirm_type(
                failure_ids=failure_ids,
                actor=admin_actor(request),
                now=timezone.now(),
                note=request.POST.get("note", ""),
            )
        except PortalError as exc:
            self.message_user(request, exc.detail, level=messages.ERROR)
            return
        self.message_user(request, f"{count} failure(s) acknowledged with their type confirmed.")

    def _correct(self, request, failure_ids: list[int], failure_type: str) -> None:
        def correct(failure_id: int) -> None:
            failure_correct_type(
                failure_id=failure_id, failure_type=failure_type, actor=admin_actor(request), now=timezone.now()
            )

        each_row(self, request, failure_ids, correct, f"corrected to {failure_type}")
