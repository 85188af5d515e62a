"""Admin pages of CI-native ingestion: reports, findings, credential rotations, flaky observations,
run flags and webhook deliveries. Read-only, except confirming a rotation (through its service)."""

from django.contrib import admin, messages
from django.utils import timezone

from escalation.admin import ReadOnlyAdmin
from escalation.choices import ChangeSource, RotationStatus
from escalation.models import (
    CredentialRotation,
    Finding,
    FlakyObservation,
    Report,
    RunFlag,
    TestResult,
    WebhookDelivery,
)
from escalation.services.rotations import rotation_confirm
from portal.audit import Actor
from portal.errors import PortalError


@admin.register(Report)
class ReportAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "format", "run", "job", "tests", "failures", "errors", "results", "has_zero_tests",
                    "received_at"]  # fmt: skip
    list_filter = ["kind", "format", "has_zero_tests"]
    search_fields = ["run__repository__name", "run__run_id", "job__name"]
    list_select_related = ["run__repository", "job"]
    exclude = ["receipt"]


@admin.register(TestResult)
class TestResultAdmin(ReadOnlyAdmin):
    list_display = ["name", "classname", "suite", "outcome", "duration", "report"]
    list_filter = ["outcome"]
    search_fields = ["name", "classname", "suite"]
    show_full_result_count = False  # the table is large; counting it on every page costs a scan


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    list_display = ["id", "tool", "category", "rule_id", "severity", "location", "line", "is_secret",
                    "is_suppressed", "failure"]  # fmt: skip
    list_filter = ["tool", "severity", "is_secret", "is_suppressed"]
    search_fields = ["rule_id", "location", "title", "commit_sha"]
    list_select_related = ["failure"]


@admin.register(CredentialRotation)
class CredentialRotationAdmin(ReadOnlyAdmin):
    list_display = ["failure", "committer", "assignee", "assignee_team", "security_team", "status", "opened_at",
                    "confirmed_at"]  # fmt: skip
    list_filter = ["status", "security_team", "assignee_team"]
    search_fields = ["committer", "failure__job_name"]
    list_select_related = ["failure", "assignee", "assignee_team", "security_team"]
    actions = ["confirm"]

    @admin.action(description="Confirm the credential was rotated (resolves the failure)", permissions=["confirm"])
    def confirm(self, request, queryset):
        confirmed = 0
        for rotation in queryset.filter(status=RotationStatus.OPEN):
            try:
                rotation_confirm(
                    rotation_id=rotation.pk,
                    actor=Actor.of_user(request.user, ChangeSource.ADMIN),
                    now=timezone.now(),
                    note=request.POST.get("note", ""),
                )
            except PortalError as exc:
                self.message_user(request, exc.detail, level=messages.ERROR)
                continue
            confirmed += 1
        self.message_user(request, f"{confirmed} rotation(s) confirmed; their failures are resolved.")

    def has_confirm_permission(self, request):
        return request.user.has_perm("escalation.resolve_failure")


@admin.register(FlakyObservation)
class FlakyObservationAdmin(ReadOnlyAdmin):
    list_display = ["job_name", "test_name", "repository", "commit_sha", "counts_for_statistics", "failure",
                    "observed_at"]  # fmt: skip
    list_filter = ["counts_for_statistics"]
    search_fields = ["job_name", "test_name", "commit_sha"]


@admin.register(RunFlag)
class RunFlagAdmin(ReadOnlyAdmin):
    list_display = ["code", "run", "detail", "created_at"]
    list_filter = ["code"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "source", "event", "action", "outcome", "reason", "delivery_id"]
    list_filter = ["source", "event", "outcome"]
    search_fields = ["delivery_id", "reason"]
