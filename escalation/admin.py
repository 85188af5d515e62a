"""The admin for QA Analysts and the Scrum Master. Every change goes through the services."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from escalation.choices import ChangeSource, FailureType, Resolution, Scope
from escalation.models import (
    CIEvent,
    CIJob,
    CIRun,
    ClockPause,
    Escalation,
    Failure,
    Identity,
    IngestSource,
    MatrixRow,
    OwnershipRule,
    Person,
    Repository,
    RoleDefaultTeam,
    Team,
    TimelineEntry,
)
from escalation.models.failures import OPEN_Q
from escalation.selectors import failures_breached, failures_not_breached, failures_similar
from escalation.services import configuration
from escalation.services.failures import (
    failure_correct_type,
    failure_mark_complex,
    failure_plan_set,
    failures_acknowledge,
    failures_resolve,
)
from portal.audit import Actor
from portal.errors import PortalError


def admin_actor(request) -> Actor:
    return Actor.of_user(request.user, ChangeSource.ADMIN)


def each_row(modeladmin: admin.ModelAdmin, request, ids: list[int], call, done: str, noun: str = "failure") -> None:
    """Call a one-row service (a failure's, a fallout's) for each id; a refused one is reported and does not
    hide the others."""
    changed, errors = 0, {}
    for pk in ids:
        try:
            call(pk)
        except PortalError as exc:
            errors[exc.detail] = None
            continue
        changed += 1
    for detail in errors:
        modeladmin.message_user(request, detail, level=messages.ERROR)
    if changed:
        modeladmin.message_user(request, f"{changed} {noun}(s) {done}.")


class ConfigAdmin(admin.ModelAdmin):
    """Saves and deletes configuration rows, inline rows included, through the configuration service."""

    def save_model(self, request, obj, form, change):
        configuration.config_object_save(obj=obj, actor=admin_actor(request), now=timezone.now())

    def delete_model(self, request, obj):
        configuration.config_object_delete(obj=obj, actor=admin_actor(request), now=timezone.now())

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)

    def save_formset(self, request, form, formset, change):
        instances = formset.save(commit=False)
        for obj in formset.deleted_objects:
            self.delete_model(request, obj)
        for obj in instances:
            self.save_model(request, obj, None, True)
        formset.save_m2m()


@admin.register(MatrixRow)
class MatrixRowAdmin(ConfigAdmin):
    list_display = [
        "failure_type",
        "primary_owner",
        "secondary_owner",
        "sla_budget",
        "tier",
        "override_policy",
        "approver_role",
        "retries",
    ]
    list_filter = ["tier", "override_policy"]

    def has_add_permission(self, request):
        return False  # one row per failure type, loaded by a migration

    def has_delete_permission(self, request, obj=None):
        return False


class IdentityInline(admin.TabularInline):
    model = Identity
    extra = 1


@admin.register(Person)
class PersonAdmin(ConfigAdmin):
    list_display = ["name", "team", "user"]
    list_filter = ["team"]
    search_fields = ["name", "identities__value"]
    inlines = [IdentityInline]


@admin.register(Team)
class TeamAdmin(ConfigAdmin):
    list_display = ["name", "slack_channel", "ticket_project", "timezone", "standup_at"]
    search_fields = ["name"]


@admin.register(OwnershipRule)
class OwnershipRuleAdmin(ConfigAdmin):
    list_display = ["position", "repository_pattern", "path_pattern", "role", "team"]
    list_filter = ["role", "team"]
    ordering = ["position", "id"]


@admin.register(RoleDefaultTeam)
class RoleDefaultTeamAdmin(ConfigAdmin):
    list_display = ["role", "team"]


@admin.register(Repository)
class RepositoryAdmin(ConfigAdmin):
    list_display = ["name", "default_branch", "protected_branches", "owning_team"]
    search_fields = ["name"]
    list_filter = ["owning_team"]


class IngestSourceForm(forms.ModelForm):
    # The API checks `scope in source.scopes`: free JSON here would let a typed string grant by substring.
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = IngestSource
        fields = ["name", "kind", "scopes", "is_active"]


@admin.register(IngestSource)
class IngestSourceAdmin(ConfigAdmin):
    form = IngestSourceForm
    list_display = ["name", "kind", "scopes", "is_active", "created_at"]
    readonly_fields = ["token_prefix", "created_at"]
    fields = ["name", "kind", "scopes", "is_active", "token_prefix", "created_at"]

    def has_add_permission(self, request):
        return False  # tokens are shown once: `manage.py create_ingest_token`


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Past SLA"), ("no", "Within SLA")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return failures_breached(queryset, now=now)
        if self.value() == "no":
            return failures_not_breached(queryset, now=now)
        return queryset


class OpenBranchFilter(admin.SimpleListFilter):
    """Branches with open failures: the full list of every feature branch ever seen would be endless."""

    title = "branch"
    parameter_name = "branch"

    def lookups(self, request, model_admin):
        branches = Failure.objects.filter(OPEN_Q).order_by("branch").values_list("branch", flat=True).distinct()
        return [(branch, branch) for branch in branches[:100]]

    def queryset(self, request, queryset):
        return queryset.filter(branch=self.value()) if self.value() else queryset


class ReadOnlyInline(admin.TabularInline):
    """A failure's own records, written only by the services."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class TimelineInline(ReadOnlyInline):
    model = TimelineEntry
    fields = ["at", "kind", "actor", "source", "message"]


class EscalationInline(ReadOnlyInline):
    model = Escalation
    fields = ["step", "due_at", "at", "group", "recipients"]


class ClockPauseInline(ReadOnlyInline):
    model = ClockPause
    fk_name = "failure"
    fields = ["started_at", "ended_at", "reason", "cause"]


class FailureActionForm(ActionForm):
    failure_type = forms.ChoiceField(choices=[("", "(type for 'correct type')"), *FailureType.choices], required=False)
    note = forms.CharField(
        required=False, widget=forms.TextInput(attrs={"placeholder": "note / reason / resolution plan"})
    )
    plan_owner = forms.ModelChoiceField(Person.objects.all(), required=False, empty_label="(plan owner)")
    plan_due = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


@admin.register(Failure)
class FailureAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "failure_type",
        "status",
        "repository",
        "branch",
        "job_name",
        "owner_team",
        "sla_due_at",
        "escalation_level",
        "occurrence_count",
        "first_seen_at",
    ]
    list_filter = ["failure_type", "owner_team", "status", OverdueFilter, "is_protected_branch", OpenBranchFilter]
    search_fields = ["repository__name", "job_name", "branch", "fingerprint", "classification_text"]
    list_select_related = ["repository", "owner_team"]
    date_hierarchy = "first_seen_at"
    action_form = FailureActionForm
    actions = [
        "acknowledge",
        "resolve_fixed",
        "resolve_false_positive",
        "correct_type",
        "set_resolution_plan",
        "mark_complex",
    ]
    inlines = [EscalationInline, ClockPauseInline, TimelineInline]
    readonly_fields = ["audit_log"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Failure._meta.fields] + ["audit_log", "similar_failures", "retry_advice_answers"]

    @admin.display(description="similar failures (same error signature)")
    def similar_failures(self, obj):
        similar = list(failures_similar(failure=obj))
        if not similar:
            return "none" if obj.signature else "no signature (empty log excerpt)"
        rows = format_html_join(
            "",
            '<li><a href="{}">#{}</a> {} {}:{} {} ({}, last seen {})</li>',
            (
                (reverse("admin:escalation_failure_change", args=[f.pk]), f.pk, f.failure_type, f.repository.name,
                 f.branch, f.job_name, f.get_status_display().lower(), f"{f.last_seen_at:%Y-%m-%d %H:%M}")
                for f in similar
            ),
        )  # fmt: skip
        url = reverse("admin:escalation_failure_changelist") + "?" + urlencode({"signature": obj.signature})
        return format_html('<ul>{}</ul><a href="{}">all failures with this signature</a>', rows, url)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="audit log")
    def audit_log(self, obj):
        url = reverse("admin:portal_auditentry_changelist")
        return format_html(
            '<a href="{}?content_type__model=failure&object_id={}">changes of this failure</a>', url, obj.pk
        )

    @admin.display(description="retry advice")
    def retry_advice_answers(self, obj):
        url = reverse("admin:escalation_retryadvice_changelist") + "?" + urlencode({"failure__id__exact": obj.pk})
        summary = f"{obj.retry_advice_count} answered, {obj.retries_advised} said retry"
        return format_html('<a href="{}">{}</a>', url, summary)

    def _call(self, request, service, queryset: QuerySet, **kwargs):
        note = request.POST.get("note", "")
        try:
            count = service(
                failure_ids=list(queryset.values_list("id", flat=True)),
                actor=admin_actor(request),
                now=timezone.now(),
                note=note,
                **kwargs,
            )
        except PortalError as exc:
            self.message_user(request, exc.detail, level=messages.ERROR)
            return
        self.message_user(request, f"{count} failure(s) changed; the others were not in a state to change.")

    @admin.action(description="Acknowledge", permissions=["acknowledge"])
    def acknowledge(self, request, queryset):
        self._call(request, failures_acknowledge, queryset)

    @admin.action(description="Resolve as fixed", permissions=["resolve"])
    def resolve_fixed(self, request, queryset):
        self._call(request, failures_resolve, queryset, resolution=Resolution.FIXED)

    @admin.action(description="Resolve as false positive", permissions=["resolve"])
    def resolve_false_positive(self, request, queryset):
        self._call(request, failures_resolve, queryset, resolution=Resolution.FALSE_POSITIVE)

    @admin.action(description="Correct type to the chosen type", permissions=["correct_type"])
    def correct_type(self, request, queryset):
        failure_type = request.POST.get("failure_type", "")
        self._each(
            request,
            queryset,
            lambda failure_id: failure_correct_type(
                failure_id=failure_id, failure_type=failure_type, actor=admin_actor(request), now=timezone.now()
            ),
            f"now {failure_type}",
        )

    def _each(self, request, queryset: QuerySet, call, done: str) -> None:
        each_row(self, request, list(queryset.values_list("id", flat=True)), call, done)

    @admin.action(description="Set the resolution plan (note = plan; empty clears it)", permissions=["plan"])
    def set_resolution_plan(self, request, queryset):
        form = FailureActionForm(request.POST)
        form.is_valid()
        data = form.cleaned_data
        self._each(
            request,
            queryset,
            lambda failure_id: failure_plan_set(
                failure_id=failure_id,
                plan=data.get("note") or "",
                owner=data.get("plan_owner"),
                due=data.get("plan_due"),
                actor=admin_actor(request),
                now=timezone.now(),
            ),
            "got the plan",
        )

    @admin.action(description="Mark complex (database tests: the 8-hour budget)", permissions=["mark_complex"])
    def mark_complex(self, request, queryset):
        note = request.POST.get("note", "")
        self._each(
            request,
            queryset,
            lambda failure_id: failure_mark_complex(
                failure_id=failure_id, actor=admin_actor(request), now=timezone.now(), note=note
            ),
            "marked complex",
        )

    def has_plan_permission(self, request):
        return request.user.has_perm("escalation.set_resolution_plan")

    def has_mark_complex_permission(self, request):
        return request.user.has_perm("escalation.mark_failure_complex")

    def has_acknowledge_permission(self, request):
        return request.user.has_perm("escalation.acknowledge_failure")

    def has_resolve_permission(self, request):
        return request.user.has_perm("escalation.resolve_failure")

    def has_correct_type_permission(self, request):
        return request.user.has_perm("escalation.correct_failure_type")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CIRun)
class CIRunAdmin(ReadOnlyAdmin):
    list_display = ["repository", "run_id", "attempt", "branch", "commit_sha", "commit_author", "created_at"]
    list_filter = ["ci_system", "source"]
    search_fields = ["repository__name", "run_id", "commit_sha", "commit_author"]


@admin.register(CIJob)
class CIJobAdmin(ReadOnlyAdmin):
    list_display = ["name", "run", "status", "step", "runner_label", "finished_at"]
    list_filter = ["status"]
    search_fields = ["name", "run__repository__name", "runner_label"]


@admin.register(CIEvent)
class CIEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "job", "status", "received_at", "idempotency_key"]
    list_filter = ["status", "source"]


import escalation.admin_classification  # noqa: E402, F401 - registers rules, rule changes and triage
import escalation.admin_digests  # noqa: E402, F401 - registers the digests and reports as sent
import escalation.admin_fallout  # noqa: E402, F401 - registers fallout rules and fallouts
import escalation.admin_notifications  # noqa: E402, F401 - registers the engine, channels, trackers and the outbox
import escalation.admin_reports  # noqa: E402, F401 - registers the CI-native ingestion pages
import escalation.admin_retry  # noqa: E402, F401 - registers the retry advice answered to CI
