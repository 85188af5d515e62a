"""The default classification rules for the RE2 engine: each in its precedence stage, with tags, version 1.

Every pattern of 0003 compiles in RE2 (none used backreferences or look-arounds); this migration puts
each rule in its stage, splits registry rate limits out of "runner-container" (tagged rate_limited),
and adds rules for lines the first set missed: Snyk severities, graphql-inspector and protobuf
drift, github-action-benchmark alerts, JWT/OAuth errors, Maven Failsafe, Cypress and Playwright
summaries (a Playwright "flaky" count is tagged flaky_suspect, as are pytest reruns), and more
database errors; a Maven Surefire results line now counts only with failures or errors (a passing
module's line matched before). Stages: 10 infrastructure causes in the log, 20 other log patterns,
30 job and step names, 40 generic test-runner summaries. Each rule gets its version-1 record.
"""

from django.db import migrations
from django.utils import timezone

INFRA, LOG, NAME, GENERIC = 10, 20, 30, 40

# (name, stage, position, field, pattern, failure_type, tags)
RULES = [
    # --- 1. infrastructure causes in the log ---
    (
        "runner-rate-limit",
        INFRA,
        100,
        "log",
        r"(toomanyrequests|You have reached your (unauthenticated |authenticated )?pull rate limit|API rate limit exceeded|You have exceeded a secondary rate limit)",
        "ci_runner",
        ["rate_limited"],
    ),
    (
        "runner-lost",
        INFRA,
        110,
        "log",
        r"(runner has received a shutdown signal|lost communication with the server|runner system failure|Job failed \(system failure\)|The operation was canceled\.|exceeded the maximum execution time|execution took longer than \S+ seconds|don't have any active runners)",
        "ci_runner",
        [],
    ),
    (
        "runner-container",
        INFRA,
        120,
        "log",
        r"(Cannot connect to the Docker daemon|Error response from daemon|ErrImagePull|ImagePullBackOff|failed to pull image|OOMKilled|CrashLoopBackOff|FailedScheduling|Insufficient (cpu|memory))",
        "ci_runner",
        [],
    ),
    (
        "runner-disk-network",
        INFRA,
        130,
        "log",
        r"(No space left on device|ENOSPC|Temporary failure in name resolution|Could not resolve host|getaddrinfo EAI_AGAIN|Connection timed out after \d+ milliseconds|TLS handshake timeout|i/o timeout)",
        "ci_runner",
        [],
    ),
    (
        "database-unreachable",
        INFRA,
        140,
        "log",
        r"(could not connect to server|connection to server at .* failed|Is the server running on host|the database system is (starting up|shutting down|in recovery mode)|too many clients already|remaining connection slots are reserved|server closed the connection unexpectedly|PSQLException: Connection to \S+ refused|Communications link failure|Can't connect to (local )?MySQL server|SQLSTATE\[HY000\] \[2002\]|HikariPool-\d+ - Connection is not available|Unable to acquire JDBC Connection|ECONNREFUSED \S+:(5432|3306|1433|27017)|port (5432|3306) failed)",
        "database_connectivity",
        [],
    ),
    (
        "test-services-unreachable",
        INFRA,
        150,
        "log",
        r"(Error \d+ connecting to \S+:6379|ECONNREFUSED \S+:6379|redis\.exceptions\.ConnectionError|Could not connect to Redis|session not created: This version of ChromeDriver|Executable doesn't exist at|is unhealthy|dependency failed to start|wait-for-it(\.sh)?: timeout|Timed out waiting for (service|container)|getaddrinfo ENOTFOUND)",
        "test_environment",
        [],
    ),
    # --- 2. other log patterns ---
    (
        "secret-scanner-output",
        LOG,
        200,
        "log",
        r"(leaks found: [1-9]|Found (verified|unverified) result|Potential secrets about to be committed|secret[s]? detected)",
        "secret_detected",
        [],
    ),
    (
        "vulnerability-critical-count",
        LOG,
        210,
        "log",
        r"(CRITICAL: [1-9]\d*|\b[1-9]\d* critical\b|Severity: critical|\[Critical Severity\])",
        "vulnerability_critical",
        [],
    ),
    (
        "vulnerability-high-count",
        LOG,
        211,
        "log",
        r"(HIGH: [1-9]\d*|\b[1-9]\d* high\b|Severity: high|\[High Severity\])",
        "vulnerability_high",
        [],
    ),
    (
        "vulnerability-medium-count",
        LOG,
        212,
        "log",
        r"(MEDIUM: [1-9]\d*|\b[1-9]\d* (moderate|medium)\b|Severity: (moderate|medium)|\[Medium Severity\])",
        "vulnerability_medium",
        [],
    ),
    (
        "generator-drift-output",
        LOG,
        220,
        "log",
        r"(API changes broke backward compatibility|generated (code|files|client|types) (is|are) (out of date|stale)|out[- ]of[- ]date generated|breaking changes? (found|detected)|Detected \d+ breaking changes?|openapi-diff|oasdiff|git diff --exit-code)",
        "generator_drift",
        [],
    ),
    (
        "benchmark-regression",
        LOG,
        230,
        "log",
        r"(Performance has regressed|Performance alert! Previous (minimum )?value was|benchmark.*regress|regress.*benchmark|thresholds on metrics .* have been crossed|slower than (the )?baseline)",
        "performance_regression",
        [],
    ),
    (
        "auth-token-errors",
        LOG,
        235,
        "log",
        r"(ExpiredSignatureError|InvalidSignatureError|InvalidAudienceError|InvalidIssuerError|TokenExpiredError: jwt expired|JsonWebTokenError: |io\.jsonwebtoken\.\w+Exception|JwtValidationException|\binvalid_grant\b)",
        "auth_change",
        [],
    ),
    (
        "integration-test-flaky",
        LOG,
        236,
        "log",
        r"^\s*\d+ flaky$",
        "integration_test",
        ["flaky_suspect"],
    ),
    (
        "integration-test-output",
        LOG,
        237,
        "log",
        r"(maven-failsafe-plugin:\S+:(verify|integration-test)|✖\s+\d+ of \d+ failed \(\d+%\)|^\s*\d+\) \[[^\]]+\] › )",
        "integration_test",
        [],
    ),
    (
        "compiler-error",
        LOG,
        240,
        "log",
        r"(COMPILATION ERROR|maven-compiler-plugin|error: cannot find symbol|error TS\d+:|error\[E\d{4}\]|\.go:\d+:\d+: (undefined|cannot use|syntax error)|Module not found: Error: Can't resolve|SyntaxError:|fatal error: \S+: No such file or directory|undefined reference to|error: could not compile|Could not build wheels|error: subprocess-exited-with-error)",
        "build_error",
        [],
    ),
    (
        "lint-error",
        LOG,
        250,
        "log",
        r"(✖ \d+ problems? \(\d+ errors?|Found \d+ errors?\.|would reformat|\d+ files? would be reformatted|golangci-lint.*issues)",
        "build_error",
        [],
    ),
    (
        "database-test-error",
        LOG,
        260,
        "log",
        r"(IntegrityError|UniqueViolation|ForeignKeyViolation|duplicate key value violates unique constraint|Duplicate entry '[^']*' for key|deadlock detected|relation \"[^\"]+\" does not exist|row-level security policy)",
        "database_test",
        [],
    ),
    # --- 3. job and step names ---
    (
        "job-generator",
        NAME,
        300,
        "job",
        r"(openapi|codegen|generat|api[-_ ]?diff|schema[-_ ]?drift|\bdrift\b)",
        "generator_drift",
        [],
    ),
    (
        "job-secret-scan",
        NAME,
        305,
        "job",
        r"(gitleaks|trufflehog|detect[-_ ]secrets|secret[-_ ]?scan)",
        "secret_detected",
        [],
    ),
    (
        "job-vulnerability-scan",
        NAME,
        310,
        "job",
        r"(trivy|grype|snyk|npm[-_ ]audit|pip[-_ ]audit|dependency[-_ ]check|codeql|\bsast\b|vuln)",
        "vulnerability_high",
        [],
    ),
    ("job-auth", NAME, 315, "job", r"(\bauth|oauth|\bjwt\b|\bsso\b|\blogin\b)", "auth_change", []),
    (
        "job-database-test",
        NAME,
        320,
        "job",
        r"((\bdb|database|postgres|mysql|\brls\b|migration)s?[-_ :]*(test|spec|check)|test[-_ :]*(db|database|postgres|mysql|rls))",
        "database_test",
        [],
    ),
    (
        "job-integration-test",
        NAME,
        325,
        "job",
        r"(integration|\be2e\b|end[-_ ]to[-_ ]end|acceptance|system[-_ ]test|\bit[-_ ]test)",
        "integration_test",
        [],
    ),
    (
        "job-performance",
        NAME,
        330,
        "job",
        r"(bench|\bperf\b|performance|load[-_ ]test|\bk6\b|jmeter|gatling)",
        "performance_regression",
        [],
    ),
    (
        "job-build",
        NAME,
        335,
        "job",
        r"(build|compile|\blint|typecheck|type[-_ ]check|\btsc\b|package|docker[-_ ]image)",
        "build_error",
        [],
    ),
    (
        "job-unit-test",
        NAME,
        340,
        "job",
        r"(unit|\btests?\b|\bspec\b|pytest|jest|junit|vitest|rspec|go[-_ ]test)",
        "unit_test",
        [],
    ),
    ("step-integration-test", NAME, 400, "step", r"(integration|\be2e\b|end[-_ ]to[-_ ]end)", "integration_test", []),
    ("step-build", NAME, 410, "step", r"(build|compile|\blint|format[-_ ]check|typecheck)", "build_error", []),
    ("step-test", NAME, 420, "step", r"(\btests?\b|pytest|jest)", "unit_test", []),
    # --- 4. generic test-runner summaries ---
    (
        "test-runner-rerun",
        GENERIC,
        490,
        "log",
        r"=+ .*\b\d+ failed\b.*\b\d+ rerun\b",
        "unit_test",
        ["flaky_suspect"],
    ),
    (
        "test-runner-summary",
        GENERIC,
        500,
        "log",
        r"(=+ .*\b\d+ failed\b|^FAILED \S+::|Tests:\s+\d+ failed|Tests run: \d+, Failures: [1-9]\d*, Errors: \d+|Tests run: \d+, Failures: \d+, Errors: [1-9]\d*|There (was|were) \d+ failures?|^--- FAIL: |\d+ examples?, [1-9]\d* failures?|AssertionError)",
        "unit_test",
        [],
    ),
]

FIELDS = ("name", "stage", "position", "field", "pattern", "failure_type", "tags")


def forward(apps, schema_editor):
    ClassificationRule = apps.get_model("escalation", "ClassificationRule")
    ClassificationRuleVersion = apps.get_model("escalation", "ClassificationRuleVersion")
    for row in RULES:
        values = dict(zip(FIELDS, row, strict=True))
        ClassificationRule.objects.update_or_create(name=values.pop("name"), defaults=values)
    # Rules people added keep their position; a rule on a name or field belongs to the name stage.
    ClassificationRule.objects.exclude(name__in=[row[0] for row in RULES]).exclude(field="log").update(stage=NAME)
    now = timezone.now()
    versioned = set(ClassificationRuleVersion.objects.values_list("rule_id", flat=True))
    for rule in ClassificationRule.objects.exclude(pk__in=versioned).order_by("stage", "position", "id"):
        ClassificationRuleVersion.objects.create(
            rule=rule,
            rule_name=rule.name,
            version=rule.version,
            kind="create",
            state={
                "name": rule.name,
                "stage": rule.stage,
                "position": rule.position,
                "field": rule.field,
                "event_field": rule.event_field,
                "pattern": rule.pattern,
                "failure_type": rule.failure_type,
                "tags": list(rule.tags),
                "is_enabled": rule.is_enabled,
                "description": rule.description,
            },
            changed_at=now,
            actor_label="migration:0009_classification_default_rules_re2",
        )


def backward(apps, schema_editor):
    apps.get_model("escalation", "ClassificationRuleVersion").objects.filter(
        actor_label="migration:0009_classification_default_rules_re2"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("escalation", "0008_classification_rule_changes")]
    operations = [migrations.RunPython(forward, backward)]
