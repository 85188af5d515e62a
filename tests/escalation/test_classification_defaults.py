"""The default rules classify log lines and job names as real CI systems and tools print them."""

import pytest

from escalation.services.classification import FALLBACK, TYPE_HINT, failure_classify
from escalation.services.config import routing_config

pytestmark = pytest.mark.django_db

# (log line as the tool prints it, where it comes from, expected type)
LOG_LINES = [
    (
        "The runner has received a shutdown signal. This can happen when the runner service is stopped, "
        "or a manually started runner is canceled.",
        "GitHub Actions",
        "ci_runner",
    ),
    (
        "The hosted runner: GitHub Actions 12 lost communication with the server. Anything in your workflow "
        "that terminates the runner process, starves it for CPU/Memory, or blocks its network access can "
        "cause this error.",
        "GitHub Actions",
        "ci_runner",
    ),
    (
        "ERROR: Job failed (system failure): Error response from daemon: container create: context deadline exceeded",
        "GitLab Runner",
        "ci_runner",
    ),
    (
        "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?.",
        "Docker CLI",
        "ci_runner",
    ),
    (
        '  Warning  Failed     12s   kubelet  Failed to pull image "registry.example.com/app:1.2": rpc error: '
        "code = NotFound",
        "Kubernetes events",
        "ci_runner",
    ),
    ("write /var/lib/docker/tmp/GetImageBlob812: no space left on device", "Docker pull", "ci_runner"),
    (
        "fatal: unable to access 'https://github.com/acme/shop.git/': Could not resolve host: github.com",
        "git",
        "ci_runner",
    ),
    (
        'psycopg.OperationalError: connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused",
        "psycopg 3",
        "database_connectivity",
    ),
    (
        "django.db.utils.OperationalError: could not connect to server: Connection refused",
        "psycopg2 via Django",
        "database_connectivity",
    ),
    (
        "org.postgresql.util.PSQLException: Connection to localhost:5432 refused. Check that the hostname and "
        "port are correct and that the postmaster is accepting TCP/IP connections.",
        "PostgreSQL JDBC",
        "database_connectivity",
    ),
    (
        "ERROR 2002 (HY000): Can't connect to local MySQL server through socket '/var/run/mysqld/mysqld.sock' (2)",
        "mysql client",
        "database_connectivity",
    ),
    (
        "com.mysql.cj.jdbc.exceptions.CommunicationsException: Communications link failure",
        "MySQL Connector/J",
        "database_connectivity",
    ),
    ("FATAL:  sorry, too many clients already", "PostgreSQL server", "database_connectivity"),
    (
        "redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379. Connection refused.",
        "redis-py",
        "test_environment",
    ),
    ("Error: connect ECONNREFUSED 127.0.0.1:6379", "node-redis", "test_environment"),
    (
        "browserType.launch: Executable doesn't exist at /ms-playwright/chromium-1091/chrome-linux/chrome",
        "Playwright",
        "test_environment",
    ),
    ("dependency failed to start: container shop-db-1 is unhealthy", "docker compose", "test_environment"),
    (
        "selenium.common.exceptions.SessionNotCreatedException: Message: session not created: This version of "
        "ChromeDriver only supports Chrome version 114",
        "Selenium",
        "test_environment",
    ),
    ("11:23AM WRN leaks found: 2", "gitleaks", "secret_detected"),
    ("Found verified result 🐷🔑", "trufflehog v3", "secret_detected"),
    ("ERROR: Potential secrets about to be committed to git repo!", "detect-secrets hook", "secret_detected"),
    ("Total: 12 (UNKNOWN: 0, LOW: 4, MEDIUM: 5, HIGH: 2, CRITICAL: 1)", "trivy", "vulnerability_critical"),
    ("8 vulnerabilities (2 moderate, 5 high, 1 critical)", "npm audit", "vulnerability_critical"),
    ("Total: 3 (UNKNOWN: 0, LOW: 1, MEDIUM: 0, HIGH: 2, CRITICAL: 0)", "trivy", "vulnerability_high"),
    ("3 vulnerabilities (1 low, 2 high)", "npm audit", "vulnerability_high"),
    ("Total: 2 (UNKNOWN: 0, LOW: 1, MEDIUM: 1, HIGH: 0, CRITICAL: 0)", "trivy", "vulnerability_medium"),
    ("2 moderate severity vulnerabilities", "npm audit", "vulnerability_medium"),
    ("API changes broke backward compatibility", "openapi-diff", "generator_drift"),
    (
        "Error: generated client is out of date. Run `make generate` and commit the result.",
        "codegen check script",
        "generator_drift",
    ),
    (
        "Performance has regressed:\n\ttest_parse (0001_base) - Field 'mean' has failed "
        "PercentageRegressionCheck: 23.512 > 20.000000000",
        "pytest-benchmark",
        "performance_regression",
    ),
    (
        "ERRO[0031] thresholds on metrics 'http_req_duration' have been crossed",
        "k6",
        "performance_regression",
    ),
    ("src/main/java/com/acme/Cart.java:42: error: cannot find symbol", "javac", "build_error"),
    ("[ERROR] COMPILATION ERROR : ", "Maven", "build_error"),
    (
        "src/cart.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'.",
        "tsc",
        "build_error",
    ),
    ("./cart.go:14:2: undefined: total", "go build", "build_error"),
    ("error[E0425]: cannot find value `total` in this scope", "rustc", "build_error"),
    ("✖ 3 problems (2 errors, 1 warning)", "ESLint", "build_error"),
    (
        'psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "cart_pkey"',
        "psycopg 3",
        "database_test",
    ),
    ('django.db.utils.ProgrammingError: relation "cart_item" does not exist', "Django", "database_test"),
    ('ERROR:  new row violates row-level security policy for table "orders"', "PostgreSQL", "database_test"),
    ("FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4", "pytest", "unit_test"),
    ("Tests:       1 failed, 41 passed, 42 total", "Jest", "unit_test"),
    ("--- FAIL: TestTotal (0.00s)", "go test", "unit_test"),
    ("Tests run: 9, Failures: 2, Errors: 5, Skipped: 0", "Maven Surefire", "unit_test"),
]

JOB_NAMES = [
    ("integration-tests", "integration_test"),
    ("e2e (chromium)", "integration_test"),
    ("db-tests", "database_test"),
    ("test-postgres", "database_test"),
    ("openapi-diff", "generator_drift"),
    ("gitleaks", "secret_detected"),
    ("trivy-image-scan", "vulnerability_high"),
    ("auth-service", "auth_change"),
    ("oauth-callback-tests", "auth_change"),
    ("benchmarks", "performance_regression"),
    ("build", "build_error"),
    ("lint", "build_error"),
    ("unit-tests", "unit_test"),
    ("test (3.11)", "unit_test"),
]


def classify(**kwargs):
    return failure_classify(rules=routing_config().rules, **kwargs)


@pytest.mark.parametrize(("line", "tool", "expected"), LOG_LINES, ids=[f"{t}:{e}" for _, t, e in LOG_LINES])
def test_a_real_log_line_gets_its_type_with_the_line_as_evidence(line, tool, expected):
    result = classify(job="ci", log_excerpt=f"some earlier output\n{line}\nmore output")
    assert result.failure_type == expected, f"{tool}: {line!r} -> {result}"
    assert result.matched_text and result.matched_text in line
    assert result.rule_id is not None


@pytest.mark.parametrize(("job", "expected"), JOB_NAMES)
def test_a_typical_job_name_gets_its_type(job, expected):
    assert classify(job=job).failure_type == expected


def test_an_infrastructure_cause_in_the_log_wins_over_the_job_name():
    log = 'connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused'
    assert classify(job="db-migrate-test", log_excerpt=log).failure_type == "database_connectivity"
    assert (
        classify(
            job="integration-tests", log_excerpt="Error 111 connecting to redis:6379. Connection refused."
        ).failure_type
        == "test_environment"
    )


def test_the_job_name_wins_over_a_generic_test_runner_summary():
    result = classify(job="integration-tests", log_excerpt="==== 2 failed, 10 passed in 3.10s ====")
    assert result.failure_type == "integration_test"


def test_a_valid_type_hint_wins_over_every_rule():
    result = classify(job="unit-tests", log_excerpt="no space left on device", type_hint="auth_change")
    assert (result.failure_type, result.classified_by) == ("auth_change", TYPE_HINT)


def test_an_invalid_type_hint_is_ignored():
    assert classify(job="unit-tests", type_hint="flaky").failure_type == "unit_test"


def test_nothing_matched_falls_back_and_says_so():
    result = classify(job="deploy-docs", log_excerpt="exit status 1")
    assert (result.failure_type, result.classified_by, result.rule_id) == ("build_error", FALLBACK, None)
