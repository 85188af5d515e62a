"""The portal's roles (Django groups) and what each may do.

CAPABILITIES is the one source of the README's role table and of the groups' permissions.
A change here ships with a new migration that calls ``sync_role_groups`` again.
"""

from dataclasses import dataclass

from escalation.choices import Role

R = Role
ALL_ROLES = tuple(Role)
OWNER_ROLES = (
    R.QA_ANALYST,
    R.SCRUM_MASTER,
    R.BACKEND_DEVELOPER,
    R.FRONTEND_DEVELOPER,
    R.DEVOPS_SPECIALIST,
    R.SECURITY_SPECIALIST,
    R.DATABASE_SPECIALIST,
    R.CICD_SPECIALIST,
    R.SENIOR_DEV_TRIAGE,
)

NOTIFICATION_ADMINS = (R.QA_ANALYST, R.SCRUM_MASTER, R.DEVOPS_SPECIALIST, R.CICD_SPECIALIST)


def _crud(app_label: str, *models: str) -> tuple[str, ...]:
    return tuple(f"{app_label}.{verb}_{model}" for model in models for verb in ("add", "change", "delete"))


@dataclass(frozen=True)
class Capability:
    name: str
    permissions: tuple[str, ...]
    roles: tuple[Role, ...]


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "View failures, timelines, the matrix, rules, teams and the audit log",
        tuple(
            f"escalation.view_{m}"
            for m in (
                "failure",
                "failureoccurrence",
                "timelineentry",
                "matrixrow",
                "classificationrule",
                "team",
                "person",
                "identity",
                "ownershiprule",
                "roledefaultteam",
                "repository",
                "cirun",
                "cijob",
                "cievent",
                # CI-native ingestion (issue 5)
                "report",
                "testresult",
                "finding",
                "credentialrotation",
                "flakyobservation",
                "runflag",
                "webhookdelivery",
                # classification and triage (issue 4)
                "classificationruleversion",
                "rulechange",
            )
        )
        + ("portal.view_auditentry",),
        ALL_ROLES,
    ),
    Capability("Acknowledge failures", ("escalation.acknowledge_failure",), OWNER_ROLES),
    Capability("Resolve failures", ("escalation.resolve_failure",), OWNER_ROLES),
    Capability("Correct a failure's type", ("escalation.correct_failure_type",), (R.QA_ANALYST, R.SENIOR_DEV_TRIAGE)),
    Capability(
        "Confirm a failure's type in triage",
        ("escalation.confirm_failure_type",),
        (R.QA_ANALYST, R.SENIOR_DEV_TRIAGE),
    ),
    Capability(
        "Edit the escalation matrix",
        ("escalation.change_matrixrow",),
        (R.SCRUM_MASTER, R.TECHNICAL_ARCHITECT),
    ),
    Capability(
        "Edit classification rules",
        _crud("escalation", "classificationrule"),
        (R.QA_ANALYST, R.SENIOR_DEV_TRIAGE),
    ),
    Capability(
        "Apply a previewed classification rule change",
        ("escalation.apply_rulechange",),
        (R.QA_ANALYST, R.SENIOR_DEV_TRIAGE),
    ),
    Capability(
        "Edit teams, people, ownership rules and branch policy",
        _crud("escalation", "team", "person", "identity", "ownershiprule", "roledefaultteam", "repository"),
        (R.SCRUM_MASTER, R.TECHNICAL_ARCHITECT),
    ),
    Capability(
        "Manage ingest sources and their tokens",
        _crud("escalation", "ingestsource") + ("escalation.view_ingestsource",),
        (R.DEVOPS_SPECIALIST, R.CICD_SPECIALIST),
    ),
    # the SLA engine (issue 6)
    Capability(
        "View escalations, clock pauses, failure groups, notifications, channels, trackers and the engine's health",
        tuple(
            f"escalation.view_{m}"
            for m in (
                "escalation",
                "clockpause",
                "failuregroup",
                "notification",
                "notificationchannel",
                "tickettracker",
                "enginebeat",
            )
        ),
        ALL_ROLES,
    ),
    Capability("Set a failure's resolution plan", ("escalation.set_resolution_plan",), OWNER_ROLES),
    Capability(
        "Mark a failure complex",
        ("escalation.mark_failure_complex",),
        (R.QA_ANALYST, R.DATABASE_SPECIALIST, R.SENIOR_DEV_TRIAGE),
    ),
    Capability(
        "Manage notification channels and ticket trackers",
        _crud("escalation", "notificationchannel", "tickettracker"),
        NOTIFICATION_ADMINS,
    ),
    Capability("Retry dead notifications", ("escalation.retry_notification",), NOTIFICATION_ADMINS),
    # fallout, retry advice, digests (issue 7)
    Capability(
        "View fallouts, fallout rules, retry advice and digests",
        tuple(f"escalation.view_{m}" for m in ("fallout", "falloutrule", "retryadvice", "digest")),
        ALL_ROLES,
    ),
    Capability(
        "Tune fallout rules (thresholds, windows, scope)",
        ("escalation.change_falloutrule",),
        (R.QA_ANALYST, R.SCRUM_MASTER, R.SENIOR_DEV_TRIAGE),
    ),
    Capability(
        "Confirm or dismiss a proposed fallout", ("escalation.decide_fallout",), (R.SCRUM_MASTER, R.SENIOR_DEV_TRIAGE)
    ),
)


def role_permissions(role: Role) -> set[str]:
    return {perm for cap in CAPABILITIES if role in cap.roles for perm in cap.permissions}


def sync_role_groups(apps) -> None:
    """Create the eleven role groups and give each exactly the permissions of its capabilities."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role in Role:
        group, _ = Group.objects.get_or_create(name=role.label)
        wanted = role_permissions(role)
        perms = []
        for dotted in sorted(wanted):
            app_label, codename = dotted.split(".")
            # A migration that runs before a later model exists grants its permission when a later one syncs.
            permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is not None:
                perms.append(permission)
        group.permissions.set(perms)


def role_table_markdown() -> str:
    """The README's role table, generated from CAPABILITIES (a test keeps the README in step)."""
    header = "| may | " + " | ".join(role.label for role in Role) + " |"
    rule = "|---|" + "---|" * len(Role)
    rows = [
        f"| {cap.name} | " + " | ".join("yes" if role in cap.roles else "-" for role in Role) + " |"
        for cap in CAPABILITIES
    ]
    return "\n".join([header, rule, *rows])
