"""DESIGN.md's fallout table as data, and who may see, tune and decide fallouts.

The override-usage and performance-analysis rows arrive with the overrides and gates work, together
with their detectors."""

from datetime import timedelta

from django.db import migrations

H = timedelta(hours=1)
D = timedelta(days=1)

# code: (name, pattern, category, owner roles, threshold, window, scope, ratio_percent, min_samples)
RULES = {
    "runner_hardening": (
        "Runner hardening",
        "3 ci_runner failures in 24 h on one runner label",
        "infrastructure", ["devops_specialist"], 3, 24 * H, "runner_label", None, None,
    ),
    "connection_pool": (
        "Connection pool",
        "3 database_connectivity failures in 24 h",
        "infrastructure", ["devops_specialist", "database_specialist"], 3, 24 * H, "global", None, None,
    ),
    "scanner_rate_limits": (
        "Scanner rate limits",
        "2 failures marked rate-limited in 24 h",
        "infrastructure", ["devops_specialist"], 2, 24 * H, "global", None, None,
    ),
    "sla_misses": (
        "SLA misses",
        "3 breaches of one failure type in 7 days",
        "process", ["scrum_master"], 3, 7 * D, "failure_type", None, None,
    ),
    "cross_team_coordination": (
        "Cross-team coordination",
        "3 failures in 7 days reassigned between teams or breached while owned by two teams",
        "process", ["scrum_master"], 3, 7 * D, "global", None, None,
    ),
    "flaky_test": (
        "Flaky test",
        "a test that failed and passed on one commit twice in 14 days, or fails 30 % of at least 10 runs",
        "technical_debt", ["senior_dev_triage"], 2, 14 * D, "test", 30, 10,
    ),
    "generator_complexity": (
        "Generator complexity",
        "3 generator_drift failures in 7 days",
        "technical_debt", ["senior_dev_triage"], 3, 7 * D, "global", None, None,
    ),
    "build_performance": (
        "Build performance",
        "build duration 20 % over its baseline (median of the last 20 green default-branch builds)",
        "technical_debt", ["senior_dev_triage"], 1, 7 * D, "job", 20, 20,
    ),
}  # fmt: skip


def forward(apps, schema_editor):
    from portal.roles import sync_role_groups

    FalloutRule = apps.get_model("escalation", "FalloutRule")
    for code, (name, pattern, category, roles, threshold, window, scope, ratio, samples) in RULES.items():
        FalloutRule.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "pattern": pattern,
                "category": category,
                "owner_roles": roles,
                "threshold": threshold,
                "window": window,
                "scope": scope,
                "ratio_percent": ratio,
                "min_samples": samples,
            },
        )
    sync_role_groups(apps)


def backward(apps, schema_editor):
    apps.get_model("escalation", "FalloutRule").objects.filter(code__in=RULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("escalation", "0019_fallout_retry_digests"),
        ("portal", "0002_role_groups"),
    ]

    operations = [migrations.RunPython(forward, backward)]
