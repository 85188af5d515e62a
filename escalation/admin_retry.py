"""Admin page of the retry advice answered to CI: read-only, one row per answer (issue 7)."""

from django.contrib import admin

from escalation.admin import ReadOnlyAdmin
from escalation.models import RetryAdvice


@admin.register(RetryAdvice)
class RetryAdviceAdmin(ReadOnlyAdmin):
    list_display = ["id", "asked_at", "repository", "branch", "run_id", "job_name", "failure_type", "attempt",
                    "retry", "delay_seconds", "max_attempts", "failure", "source"]  # fmt: skip
    list_filter = ["retry", "failure_type", "source"]
    search_fields = ["repository", "job_name", "run_id", "reason"]
    list_select_related = ["failure", "source"]
    raw_id_fields = ["failure"]
    date_hierarchy = "asked_at"
    show_full_result_count = False  # CI asks on every failed job; counting the table on every page costs a scan
