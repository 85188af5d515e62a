"""The default rules classify log lines and job names as real CI systems and tools print them."""

from pathlib import Path

import pytest
import yaml

from escalation.choices import FailureType
from escalation.services.classification import FALLBACK, TYPE_HINT, failure_classify
from escalation.services.config import routing_config

pytestmark = pytest.mark.django_db

CORPUS_FILE = Path(__file__).parent.parent / "data" / "classification" / "log_lines.yaml"
CORPUS = yaml.safe_load(CORPUS_FILE.read_text(encoding="utf-8"))
# (log line as the tool prints it, tool, where it comes from, expected type, expected tags)
LOG_LINES = [
    (entry["line"], entry["tool"], entry["source"], failure_type, entry.get("tags", []))
    for failure_type, entries in CORPUS.items()
    for entry in entries
]
# Every type a log line can reveal; the corpus must hold at least three lines for each.
LOG_REVEALED_TYPES = set(FailureType.values)

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


def test_the_corpus_holds_three_sourced_lines_for_every_type_a_log_can_reveal():
    assert set(CORPUS) == LOG_REVEALED_TYPES
    assert {t: len(entries) for t, entries in CORPUS.items() if len(entries) < 3} == {}
    assert all(line.strip() and tool and len(source) > 10 for line, tool, source, _, _ in LOG_LINES)


@pytest.mark.parametrize(
    ("line", "tool", "source", "expected", "tags"), LOG_LINES, ids=[f"{e}:{t}:{n}" for n, (_, t, _, e, _) in
                                                                   enumerate(LOG_LINES)]
)  # fmt: skip
def test_a_real_log_line_gets_its_type_with_the_line_as_evidence(line, tool, source, expected, tags):
    result = classify(job="ci", log_excerpt=f"some earlier output\n{line}\nmore output")
    assert result.failure_type == expected, f"{tool} ({source}): {line!r} -> {result}"
    assert result.matched_text and result.matched_text in line
    assert result.rule_id is not None
    assert list(result.tags) == tags


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
