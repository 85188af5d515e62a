"""Default teams (one per role), each role's default team, and DESIGN.md's escalation matrix."""

from datetime import timedelta

from django.db import migrations

TEAMS = {
    "qa_analyst": "QA",
    "scrum_master": "Scrum",
    "backend_developer": "Backend",
    "frontend_developer": "Frontend",
    "devops_specialist": "DevOps",
    "security_specialist": "Security",
    "database_specialist": "Database",
    "cicd_specialist": "CI/CD",
    "senior_dev_triage": "Senior Dev Triage",
    "technical_architect": "Architecture",
    "product_owner": "Product",
}

H = timedelta(hours=1)
HOTFIX = "critical production hotfix only"
ROOT_CAUSE = "root cause recorded and fix in progress"

# failure_type: (comes_from, primary, secondary, sla, tier, override, conditions, approver, retries, backoff_s, retry_condition, extra)
MATRIX = {
    "generator_drift": (
        "rules (OpenAPI / type generation diff)",
        "backend_developer",
        "frontend_developer",
        2 * H,
        "immediate",
        "never",
        "",
        "",
        0,
        0,
        "none",
        {},
    ),
    "unit_test": (
        "JUnit, rules",
        "code_author",
        "qa_analyst",
        4 * H,
        "standard",
        "hotfix_only",
        HOTFIX,
        "technical_architect",
        0,
        0,
        "none",
        {},
    ),
    "integration_test": (
        "JUnit, rules",
        "backend_developer",
        "qa_analyst",
        8 * H,
        "investigation",
        "hotfix_only",
        HOTFIX,
        "technical_architect",
        0,
        0,
        "none",
        {},
    ),
    "database_test": (
        "JUnit, rules",
        "database_specialist",
        "backend_developer",
        4 * H,
        "standard",
        "hotfix_only",
        HOTFIX,
        "technical_architect",
        0,
        0,
        "none",
        {"complex_sla_budget": 8 * H},
    ),
    "secret_detected": (
        "secret reports, SARIF from secret scanners, rules",
        "security_specialist",
        "original_committer",
        1 * H,
        "immediate",
        "never",
        "",
        "",
        0,
        0,
        "none",
        {"opens_rotation_task": True},
    ),
    "vulnerability_critical": (
        "SARIF, Trivy (CVSS >= 9.0)",
        "security_specialist",
        "code_author",
        24 * H,
        "immediate",
        "never",
        "",
        "",
        0,
        0,
        "none",
        {"acknowledge_budget": 1 * H},
    ),
    "vulnerability_high": (
        "SARIF, Trivy (7.0-8.9)",
        "security_specialist",
        "code_author",
        24 * H,
        "standard",
        "with_approval",
        "false positive, accepted risk",
        "security_specialist",
        0,
        0,
        "none",
        {},
    ),
    "vulnerability_medium": (
        "SARIF, Trivy (4.0-6.9)",
        "security_specialist",
        "code_author",
        7 * 24 * H,
        "standard",
        "with_approval",
        "",
        "security_specialist",
        0,
        0,
        "none",
        {},
    ),
    "ci_runner": (
        "rules (container start, runner lost, network, disk)",
        "devops_specialist",
        "cicd_specialist",
        H / 2,
        "immediate",
        "with_approval",
        ROOT_CAUSE,
        "devops_specialist",
        3,
        30,
        "none",
        {},
    ),
    "database_connectivity": (
        "rules",
        "devops_specialist",
        "database_specialist",
        1 * H,
        "immediate",
        "with_approval",
        ROOT_CAUSE,
        "devops_specialist",
        2,
        30,
        "other_jobs_succeed",
        {},
    ),
    "test_environment": (
        "rules",
        "devops_specialist",
        "qa_analyst",
        4 * H,
        "standard",
        "with_approval",
        "",
        "devops_specialist",
        3,
        30,
        "none",
        {},
    ),
    "build_error": (
        "rules (compile, lint, packaging)",
        "code_author",
        "senior_dev_triage",
        2 * H,
        "standard",
        "with_approval",
        "rare",
        "senior_dev_triage",
        0,
        0,
        "none",
        {},
    ),
    "performance_regression": (
        "measurements against baseline, rules",
        "component_owner",
        "senior_dev_triage",
        24 * H,
        "investigation",
        "under_threshold",
        "with a fix date",
        "senior_dev_triage",
        1,
        60,
        "infrastructure_healthy",
        {"raised_tier": "standard", "raised_tier_above_percent": 20, "override_threshold_percent": 20},
    ),
    "auth_change": (
        "rules (authentication / OAuth jobs and code)",
        "security_specialist",
        "backend_developer",
        4 * H,
        "immediate",
        "never",
        "",
        "",
        0,
        0,
        "none",
        {},
    ),
}


def forward(apps, schema_editor):
    Team = apps.get_model("escalation", "Team")
    RoleDefaultTeam = apps.get_model("escalation", "RoleDefaultTeam")
    MatrixRow = apps.get_model("escalation", "MatrixRow")
    for role, name in TEAMS.items():
        team, _ = Team.objects.get_or_create(name=name)
        RoleDefaultTeam.objects.update_or_create(role=role, defaults={"team": team})
    for failure_type, row in MATRIX.items():
        (
            comes_from,
            primary,
            secondary,
            budget,
            tier,
            policy,
            conditions,
            approver,
            retries,
            backoff,
            condition,
            extra,
        ) = row
        MatrixRow.objects.update_or_create(
            failure_type=failure_type,
            defaults={
                "comes_from": comes_from,
                "primary_owner": primary,
                "secondary_owner": secondary,
                "sla_budget": budget,
                "tier": tier,
                "override_policy": policy,
                "override_conditions": conditions,
                "approver_role": approver,
                "retries": retries,
                "retry_backoff_seconds": backoff,
                "retry_condition": condition,
                **extra,
            },
        )


def backward(apps, schema_editor):
    apps.get_model("escalation", "MatrixRow").objects.filter(failure_type__in=MATRIX).delete()
    apps.get_model("escalation", "RoleDefaultTeam").objects.filter(role__in=TEAMS).delete()


class Migration(migrations.Migration):
    dependencies = [("escalation", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
