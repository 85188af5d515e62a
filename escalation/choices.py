"""Fixed values of the escalation domain."""

from django.db import models


class FailureType(models.TextChoices):
    GENERATOR_DRIFT = "generator_drift", "Generator drift"
    UNIT_TEST = "unit_test", "Unit test"
    INTEGRATION_TEST = "integration_test", "Integration test"
    DATABASE_TEST = "database_test", "Database test"
    SECRET_DETECTED = "secret_detected", "Secret detected"
    VULNERABILITY_CRITICAL = "vulnerability_critical", "Vulnerability (critical)"
    VULNERABILITY_HIGH = "vulnerability_high", "Vulnerability (high)"
    VULNERABILITY_MEDIUM = "vulnerability_medium", "Vulnerability (medium)"
    CI_RUNNER = "ci_runner", "CI runner"
    DATABASE_CONNECTIVITY = "database_connectivity", "Database connectivity"
    TEST_ENVIRONMENT = "test_environment", "Test environment"
    BUILD_ERROR = "build_error", "Build error"
    PERFORMANCE_REGRESSION = "performance_regression", "Performance regression"
    AUTH_CHANGE = "auth_change", "Auth change"


INFRASTRUCTURE_TYPES = frozenset(
    {FailureType.CI_RUNNER, FailureType.DATABASE_CONNECTIVITY, FailureType.TEST_ENVIRONMENT}
)

# The type a failure gets when no rule matched; the triage queue shows it as unclassified.
FALLBACK_TYPE = FailureType.BUILD_ERROR


class Role(models.TextChoices):
    """The portal's roles. Each is a Django group of the same name."""

    QA_ANALYST = "qa_analyst", "QA Analyst"
    SCRUM_MASTER = "scrum_master", "Scrum Master"
    BACKEND_DEVELOPER = "backend_developer", "Backend Developer"
    FRONTEND_DEVELOPER = "frontend_developer", "Frontend Developer"
    DEVOPS_SPECIALIST = "devops_specialist", "DevOps Specialist"
    SECURITY_SPECIALIST = "security_specialist", "Security Specialist"
    DATABASE_SPECIALIST = "database_specialist", "Database Specialist"
    CICD_SPECIALIST = "cicd_specialist", "CI/CD Specialist"
    SENIOR_DEV_TRIAGE = "senior_dev_triage", "Senior Dev Triage"
    TECHNICAL_ARCHITECT = "technical_architect", "Technical Architect"
    PRODUCT_OWNER = "product_owner", "Product Owner"


class Owner(models.TextChoices):
    """Who a matrix row names as owner: a role, or a person found from the CI payload."""

    CODE_AUTHOR = "code_author", "Code author"
    ORIGINAL_COMMITTER = "original_committer", "Original committer"
    COMPONENT_OWNER = "component_owner", "Component owner"
    QA_ANALYST = Role.QA_ANALYST.value, Role.QA_ANALYST.label
    BACKEND_DEVELOPER = Role.BACKEND_DEVELOPER.value, Role.BACKEND_DEVELOPER.label
    FRONTEND_DEVELOPER = Role.FRONTEND_DEVELOPER.value, Role.FRONTEND_DEVELOPER.label
    DEVOPS_SPECIALIST = Role.DEVOPS_SPECIALIST.value, Role.DEVOPS_SPECIALIST.label
    SECURITY_SPECIALIST = Role.SECURITY_SPECIALIST.value, Role.SECURITY_SPECIALIST.label
    DATABASE_SPECIALIST = Role.DATABASE_SPECIALIST.value, Role.DATABASE_SPECIALIST.label
    CICD_SPECIALIST = Role.CICD_SPECIALIST.value, Role.CICD_SPECIALIST.label
    SENIOR_DEV_TRIAGE = Role.SENIOR_DEV_TRIAGE.value, Role.SENIOR_DEV_TRIAGE.label


PERSON_OWNERS = frozenset({Owner.CODE_AUTHOR, Owner.ORIGINAL_COMMITTER})


class Tier(models.TextChoices):
    IMMEDIATE = "immediate", "Immediate"
    STANDARD = "standard", "Standard"
    INVESTIGATION = "investigation", "Investigation"


class OverridePolicy(models.TextChoices):
    NEVER = "never", "Never"
    HOTFIX_ONLY = "hotfix_only", "Critical production hotfix only"
    WITH_APPROVAL = "with_approval", "With approval"
    UNDER_THRESHOLD = "under_threshold", "Allowed under a threshold, with a fix date"


class RetryCondition(models.TextChoices):
    NONE = "none", "No condition"
    OTHER_JOBS_SUCCEED = "other_jobs_succeed", "Only while the run's other jobs succeed"
    INFRASTRUCTURE_HEALTHY = "infrastructure_healthy", "Only while infrastructure health is normal"


class Calendar(models.TextChoices):
    ALWAYS = "24x7", "24x7"
    TEAM_HOURS = "team_hours", "Owning team's working hours"


class FailureStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


OPEN_STATUSES = (FailureStatus.OPEN, FailureStatus.ACKNOWLEDGED)


class Resolution(models.TextChoices):
    FIXED = "fixed", "Fixed"
    RECOVERED = "recovered", "Recovered (the same job passed again)"
    FALSE_POSITIVE = "false_positive", "False positive"
    SUPERSEDED = "superseded", "Superseded (replaced by the failures of its jobs)"


class JobStatus(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class RuleField(models.TextChoices):
    """What a classification rule looks at."""

    JOB = "job", "Job name"
    STEP = "step", "Step name"
    LOG = "log", "Log excerpt"
    CHANGED_FILES = "changed_files", "Changed files (one path a line)"
    EVENT_FIELD = "event_field", "Event field"


class RuleStage(models.IntegerChoices):
    """The precedence of classification rules, after a valid type hint and before the fallback type.

    A rule of an earlier stage always wins over a rule of a later one, whatever their positions;
    position orders the rules within a stage.
    """

    INFRASTRUCTURE = 10, "1. Infrastructure causes in the log"
    LOG = 20, "2. Other log patterns"
    NAME = 30, "3. Job and step names, changed files, event fields"
    GENERIC = 40, "4. Generic test-runner summaries in the log"


class TriageVerdict(models.TextChoices):
    """What QA said of a failure's type in triage; it counts for or against the rule that decided it."""

    CONFIRMED = "confirmed", "Type confirmed"
    CORRECTED = "corrected", "Type corrected"


class RuleChangeKind(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"


class RuleChangeStatus(models.TextChoices):
    PREVIEWING = "previewing", "Preview running"
    PREVIEWED = "previewed", "Previewed"
    APPLYING = "applying", "Applying"
    APPLIED = "applied", "Applied"
    DISCARDED = "discarded", "Discarded"
    FAILED = "failed", "Failed"


class Scope(models.TextChoices):
    INGEST = "ingest", "Ingest (events, reports, measurements, releases, retry advice)"
    READ = "read", "Read (failures, overrides, quarantine, decisions)"
    REQUEST = "request", "Request (override requests)"


class SourceKind(models.TextChoices):
    GENERIC = "generic", "Generic JSON API"
    GITHUB = "github", "GitHub webhooks"
    GITLAB = "gitlab", "GitLab webhooks"


class ChangeSource(models.TextChoices):
    """Where a change came from, for the audit log and the timeline."""

    ADMIN = "admin", "Admin"
    API = "api", "API"
    TASK = "task", "Task"
    COMMAND = "command", "Management command"


class WebhookOutcome(models.TextChoices):
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored"


class ReportKind(models.TextChoices):
    JUNIT = "junit", "JUnit XML"
    SARIF = "sarif", "SARIF"
    TRIVY = "trivy", "Trivy JSON"
    SECRETS = "secrets", "Secret-scanner report"


class TestOutcome(models.TextChoices):
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    ERROR = "error", "Error"
    SKIPPED = "skipped", "Skipped"


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    NONE = "none", "None / informational"


class RotationStatus(models.TextChoices):
    OPEN = "open", "Open"
    CONFIRMED = "confirmed", "Rotation confirmed"


# --- SLA enforcement: the ladder, the outbox, tickets ---


class EscalationStep(models.TextChoices):
    """A rung of DESIGN.md's ladder (see README "SLA clock and the escalation ladder"). Each happens at most
    once per failure. The labels head the messages."""

    OPENED = "opened", "Opened"
    TICKET = "ticket", "Ticket"
    TRIAGE_REMINDER = "triage_reminder", "Triage reminder"
    ACKNOWLEDGE_REMINDER = "acknowledge_reminder", "Acknowledgement overdue"
    AT_RISK = "at_risk", "At risk"
    LEVEL_1 = "level_1", "SLA breached (level 1)"
    LEVEL_2 = "level_2", "Still breached at standup, no plan (level 2)"


class ChannelKind(models.TextChoices):
    SLACK = "slack", "Slack incoming webhook"
    WEBHOOK = "webhook", "JSON webhook (HMAC-signed)"
    EMAIL = "email", "E-mail"


class TrackerKind(models.TextChoices):
    GITHUB = "github", "GitHub Issues"
    JIRA_V2 = "jira_v2", "Jira (REST v2)"
    JIRA_V3 = "jira_v3", "Jira (REST v3, ADF)"
    LINEAR = "linear", "Linear"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    BATCHED = "batched", "Sent in a batch"
    DEAD = "dead", "Dead letter"


class FalloutCategory(models.TextChoices):
    """DESIGN.md's fallout categories: infrastructure opens its ticket at once, the others are proposed."""

    INFRASTRUCTURE = "infrastructure", "Infrastructure"
    PROCESS = "process", "Process"
    TECHNICAL_DEBT = "technical_debt", "Technical debt"


class FalloutScope(models.TextChoices):
    """What one fallout is about: its triggers are counted per value of this."""

    GLOBAL = "global", "Everywhere"
    REPOSITORY = "repository", "Per repository"
    RUNNER_LABEL = "runner_label", "Per runner label"
    FAILURE_TYPE = "failure_type", "Per failure type"
    TEAM = "team", "Per owning team"
    JOB = "job", "Per repository and job"
    TEST = "test", "Per test"


class FalloutStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    OPEN = "open", "Open"
    DISMISSED = "dismissed", "Dismissed"
    CLOSED = "closed", "Closed"


class DigestKind(models.TextChoices):
    DAILY = "daily", "Daily standup digest"
    WEEKLY = "weekly", "Weekly stakeholder report"
    MONTHLY = "monthly", "Monthly process review"
