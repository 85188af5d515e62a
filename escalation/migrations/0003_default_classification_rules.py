"""The default classification rules.

Positions encode the precedence: 100s infrastructure causes in the log (a db-migrate job that died
on "Connection refused" is database_connectivity, not a database test), 200s other specific log
lines (scanners, compilers, generators, benchmarks), 300s job names, 400s step names, 500s the
generic "tests failed" summaries of test runners, which say a test failed but not which kind.
"""

from django.db import migrations

# (name, position, field, pattern, failure_type)
RULES = [
    # --- infrastructure causes in the log ---
    (
        "runner-lost",
        100,
        "log",
        r"(runner has received a shutdown signal|lost communication with the server|runner system failure|Job failed \(system failure\)|The operation was canceled\.|exceeded the maximum execution time|execution took longer than \S+ seconds|don't have any active runners)",
        "ci_runner",
    ),
    (
        "runner-container",
        110,
        "log",
        r"(Cannot connect to the Docker daemon|Error response from daemon|ErrImagePull|ImagePullBackOff|failed to pull image|toomanyrequests: You have reached your pull rate limit|OOMKilled|CrashLoopBackOff|FailedScheduling|Insufficient (cpu|memory))",
        "ci_runner",
    ),
    (
        "runner-disk-network",
        120,
        "log",
        r"(No space left on device|ENOSPC|Temporary failure in name resolution|Could not resolve host|getaddrinfo EAI_AGAIN|Connection timed out after \d+ milliseconds|TLS handshake timeout|i/o timeout)",
        "ci_runner",
    ),
    (
        "database-unreachable",
        130,
        "log",
        r"(could not connect to server|connection to server at .* failed|Is the server running on host|the database system is (starting up|shutting down|in recovery mode)|too many clients already|remaining connection slots are reserved|server closed the connection unexpectedly|PSQLException: Connection to \S+ refused|Communications link failure|Can't connect to (local )?MySQL server|SQLSTATE\[HY000\] \[2002\]|HikariPool-\d+ - Connection is not available|Unable to acquire JDBC Connection|ECONNREFUSED \S+:(5432|3306|1433|27017)|port (5432|3306) failed)",
        "database_connectivity",
    ),
    (
        "test-services-unreachable",
        140,
        "log",
        r"(Error \d+ connecting to \S+:6379|ECONNREFUSED \S+:6379|redis\.exceptions\.ConnectionError|Could not connect to Redis|session not created: This version of ChromeDriver|Executable doesn't exist at|is unhealthy|dependency failed to start|wait-for-it(\.sh)?: timeout|Timed out waiting for (service|container)|getaddrinfo ENOTFOUND)",
        "test_environment",
    ),
    # --- other specific log lines ---
    (
        "secret-scanner-output",
        200,
        "log",
        r"(leaks found: [1-9]|Found (verified|unverified) result|Potential secrets about to be committed|secret[s]? detected)",
        "secret_detected",
    ),
    (
        "vulnerability-critical-count",
        210,
        "log",
        r"(CRITICAL: [1-9]\d*|\b[1-9]\d* critical\b|Severity: critical)",
        "vulnerability_critical",
    ),
    (
        "vulnerability-high-count",
        211,
        "log",
        r"(HIGH: [1-9]\d*|\b[1-9]\d* high\b|Severity: high)",
        "vulnerability_high",
    ),
    (
        "vulnerability-medium-count",
        212,
        "log",
        r"(MEDIUM: [1-9]\d*|\b[1-9]\d* (moderate|medium)\b|Severity: (moderate|medium))",
        "vulnerability_medium",
    ),
    (
        "generator-drift-output",
        220,
        "log",
        r"(API changes broke backward compatibility|generated (code|files|client|types) (is|are) (out of date|stale)|out[- ]of[- ]date generated|breaking changes? (found|detected)|openapi-diff|oasdiff|git diff --exit-code)",
        "generator_drift",
    ),
    (
        "benchmark-regression",
        230,
        "log",
        r"(Performance has regressed|benchmark.*regress|regress.*benchmark|thresholds on metrics .* have been crossed|slower than (the )?baseline)",
        "performance_regression",
    ),
    (
        "compiler-error",
        240,
        "log",
        r"(COMPILATION ERROR|maven-compiler-plugin|error: cannot find symbol|error TS\d+:|error\[E\d{4}\]|\.go:\d+:\d+: (undefined|cannot use|syntax error)|Module not found: Error: Can't resolve|SyntaxError:|fatal error: \S+: No such file or directory|undefined reference to|error: could not compile|Could not build wheels|error: subprocess-exited-with-error)",
        "build_error",
    ),
    (
        "lint-error",
        250,
        "log",
        r"(✖ \d+ problems? \(\d+ errors?|Found \d+ errors?\.|would reformat|\d+ files? would be reformatted|golangci-lint.*issues)",
        "build_error",
    ),
    (
        "database-test-error",
        260,
        "log",
        r"(IntegrityError|UniqueViolation|ForeignKeyViolation|deadlock detected|relation \"[^\"]+\" does not exist|row-level security policy)",
        "database_test",
    ),
    # --- job names ---
    (
        "job-generator",
        300,
        "job",
        r"(openapi|codegen|generat|api[-_ ]?diff|schema[-_ ]?drift|\bdrift\b)",
        "generator_drift",
    ),
    (
        "job-secret-scan",
        305,
        "job",
        r"(gitleaks|trufflehog|detect[-_ ]secrets|secret[-_ ]?scan)",
        "secret_detected",
    ),
    (
        "job-vulnerability-scan",
        310,
        "job",
        r"(trivy|grype|snyk|npm[-_ ]audit|pip[-_ ]audit|dependency[-_ ]check|codeql|\bsast\b|vuln)",
        "vulnerability_high",
    ),
    ("job-auth", 315, "job", r"(\bauth|oauth|\bjwt\b|\bsso\b|\blogin\b)", "auth_change"),
    (
        "job-database-test",
        320,
        "job",
        r"((\bdb|database|postgres|mysql|\brls\b|migration)s?[-_ :]*(test|spec|check)|test[-_ :]*(db|database|postgres|mysql|rls))",
        "database_test",
    ),
    (
        "job-integration-test",
        325,
        "job",
        r"(integration|\be2e\b|end[-_ ]to[-_ ]end|acceptance|system[-_ ]test|\bit[-_ ]test)",
        "integration_test",
    ),
    (
        "job-performance",
        330,
        "job",
        r"(bench|\bperf\b|performance|load[-_ ]test|\bk6\b|jmeter|gatling)",
        "performance_regression",
    ),
    (
        "job-build",
        335,
        "job",
        r"(build|compile|\blint|typecheck|type[-_ ]check|\btsc\b|package|docker[-_ ]image)",
        "build_error",
    ),
    (
        "job-unit-test",
        340,
        "job",
        r"(unit|\btests?\b|\bspec\b|pytest|jest|junit|vitest|rspec|go[-_ ]test)",
        "unit_test",
    ),
    # --- step names ---
    ("step-integration-test", 400, "step", r"(integration|\be2e\b|end[-_ ]to[-_ ]end)", "integration_test"),
    ("step-build", 410, "step", r"(build|compile|\blint|format[-_ ]check|typecheck)", "build_error"),
    ("step-test", 420, "step", r"(\btests?\b|pytest|jest)", "unit_test"),
    # --- generic test-runner summaries ---
    (
        "test-runner-summary",
        500,
        "log",
        r"(=+ .*\b\d+ failed\b|^FAILED \S+::|Tests:\s+\d+ failed|Tests run: \d+, Failures: \d+, Errors: \d+|There (was|were) \d+ failures?|^--- FAIL: |\d+ examples?, [1-9]\d* failures?|AssertionError)",
        "unit_test",
    ),
]


def forward(apps, schema_editor):
    ClassificationRule = apps.get_model("escalation", "ClassificationRule")
    for name, position, field, pattern, failure_type in RULES:
        ClassificationRule.objects.update_or_create(
            name=name,
            defaults={"position": position, "field": field, "pattern": pattern, "failure_type": failure_type},
        )


def backward(apps, schema_editor):
    apps.get_model("escalation", "ClassificationRule").objects.filter(name__in=[r[0] for r in RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("escalation", "0002_default_teams_and_matrix")]
    operations = [migrations.RunPython(forward, backward)]
