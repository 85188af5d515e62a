"""A failure's life: open or recur (reporting), then acknowledge, resolve, recover, correct, plan (lifecycle)."""

from escalation.services.failures.lifecycle import (
    OPEN_FOR_JOB,
    FailuresChanged,
    failure_correct_type,
    failure_mark_complex,
    failure_open_twin,
    failure_plan_set,
    failure_retype,
    failure_run_level_replace,
    failures_acknowledge,
    failures_recover,
    failures_recover_with_event,
    failures_resolve,
    require_permission,
)
from escalation.services.failures.reporting import Reported, failure_fingerprint, failure_report, failures_report_many

__all__ = [
    "OPEN_FOR_JOB",
    "FailuresChanged",
    "Reported",
    "failure_correct_type",
    "failure_fingerprint",
    "failure_mark_complex",
    "failure_open_twin",
    "failure_plan_set",
    "failure_report",
    "failure_retype",
    "failure_run_level_replace",
    "failures_acknowledge",
    "failures_recover",
    "failures_recover_with_event",
    "failures_report_many",
    "failures_resolve",
    "require_permission",
]
