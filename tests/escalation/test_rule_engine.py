"""The RE2 rule engine: the documented precedence, every field a rule can read, tags and evidence, and the
refusal of patterns RE2 cannot compile, that match everything, or are too slow on worst-case samples."""

import time

import pytest

from escalation.choices import FailureType, RuleField, RuleStage
from escalation.exceptions import InvalidRule
from escalation.models import ClassificationRule, Failure
from escalation.services.classification import FALLBACK, TYPE_HINT, failure_classify
from escalation.services.config import routing_config
from escalation.services.rule_changes import rule_validate
from escalation.services.rule_engine import RuleEngine, RuleSpec, pattern_check, worst_case_samples
from tests.factories import event_body

pytestmark = pytest.mark.django_db


def spec(id, pattern, failure_type, *, stage=RuleStage.LOG, position=100, field=RuleField.LOG, event_field="",
         tags=()):  # fmt: skip
    return RuleSpec(id, f"rule-{id}", 1, stage, position, field, event_field, pattern, failure_type, tuple(tags))


def classify(engine, **kwargs):
    return failure_classify(rules=engine, **{"job": "ci", **kwargs})


# --- precedence ---


def test_an_earlier_stage_wins_whatever_the_positions():
    engine = RuleEngine(
        [
            spec(1, "unit", FailureType.UNIT_TEST, stage=RuleStage.NAME, position=1, field=RuleField.JOB),
            spec(2, "Connection refused", FailureType.DATABASE_CONNECTIVITY, stage=RuleStage.INFRASTRUCTURE,
                 position=999),
            spec(3, "refused", FailureType.BUILD_ERROR, stage=RuleStage.LOG, position=1),
        ]
    )  # fmt: skip
    result = classify(engine, job="unit-tests", log_excerpt="psql: Connection refused")
    assert (result.failure_type, result.rule_id) == (FailureType.DATABASE_CONNECTIVITY, 2)


def test_within_a_stage_the_lowest_position_wins_then_the_lowest_id():
    engine = RuleEngine(
        [
            spec(5, "boom", FailureType.BUILD_ERROR, position=20),
            spec(4, "boom", FailureType.UNIT_TEST, position=10),
            spec(3, "boom", FailureType.CI_RUNNER, position=10),
        ]
    )
    assert classify(engine, log_excerpt="boom").rule_id == 3


def test_log_patterns_win_over_names_and_names_over_generic_summaries():
    engine = RuleEngine(
        [
            spec(1, "integration", FailureType.INTEGRATION_TEST, stage=RuleStage.NAME, field=RuleField.JOB),
            spec(2, "error TS", FailureType.BUILD_ERROR, stage=RuleStage.LOG),
            spec(3, r"\d+ failed", FailureType.UNIT_TEST, stage=RuleStage.GENERIC),
        ]
    )
    both = "src/a.ts(1,1): error TS2322: nope\n3 failed, 1 passed"
    assert classify(engine, job="integration-tests", log_excerpt=both).failure_type == FailureType.BUILD_ERROR
    named = classify(engine, job="integration-tests", log_excerpt="3 failed")
    assert named.failure_type == FailureType.INTEGRATION_TEST
    assert classify(engine, job="ci", log_excerpt="3 failed").failure_type == FailureType.UNIT_TEST


def test_the_default_precedence_types_a_db_migrate_job_that_lost_its_database_as_connectivity():
    log = 'psycopg.OperationalError: connection to server at "db", port 5432 failed: Connection refused'
    result = classify(routing_config().rules, job="db-migrate", log_excerpt=log)
    assert result.failure_type == FailureType.DATABASE_CONNECTIVITY
    assert ClassificationRule.objects.get(pk=result.rule_id).stage == RuleStage.INFRASTRUCTURE


def test_a_type_hint_wins_before_any_rule_runs_and_nothing_matched_is_the_fallback():
    engine = routing_config().rules
    hinted = classify(engine, log_excerpt="no space left on device", type_hint=FailureType.AUTH_CHANGE)
    assert (hinted.failure_type, hinted.classified_by) == (FailureType.AUTH_CHANGE, TYPE_HINT)
    fallback = classify(engine, job="deploy-docs", log_excerpt="exit status 1")
    assert (fallback.failure_type, fallback.classified_by, fallback.is_fallback) == ("build_error", FALLBACK, True)


# --- fields, tags, evidence ---


def test_rules_read_the_step_the_changed_files_and_event_fields():
    engine = RuleEngine(
        [
            spec(1, r"^src/auth/", FailureType.AUTH_CHANGE, stage=RuleStage.NAME, field=RuleField.CHANGED_FILES),
            spec(2, r"^arm64-", FailureType.CI_RUNNER, stage=RuleStage.NAME, field=RuleField.EVENT_FIELD,
                 event_field="runner"),
            spec(3, "e2e", FailureType.INTEGRATION_TEST, stage=RuleStage.NAME, field=RuleField.STEP),
        ]
    )  # fmt: skip
    files = classify(engine, changed_files=["README.md", "src/auth/jwt.py"])
    assert (files.failure_type, files.matched_text) == (FailureType.AUTH_CHANGE, "src/auth/jwt.py")
    runner = classify(engine, event_fields={"runner": "arm64-large", "source": "github-actions"})
    assert (runner.failure_type, runner.matched_text) == (FailureType.CI_RUNNER, "arm64-large")
    assert classify(engine, step="Run e2e suite").failure_type == FailureType.INTEGRATION_TEST
    assert classify(engine, event_fields={"runner": "x86-large"}).classified_by == FALLBACK


def test_the_deciding_rule_gives_its_tags_and_the_whole_matched_line_as_evidence():
    engine = RuleEngine([spec(1, "toomanyrequests", FailureType.CI_RUNNER, tags=["rate_limited"])])
    log = "pulling postgres:16\nError response from daemon: toomanyrequests: slow down\nexit 1"
    result = classify(engine, log_excerpt=log)
    assert result.tags == ("rate_limited",)
    assert result.matched_text == "Error response from daemon: toomanyrequests: slow down"


def test_patterns_are_case_insensitive_and_anchor_at_line_ends():
    engine = RuleEngine([spec(1, r"^--- FAIL: \w+$", FailureType.UNIT_TEST)])
    assert classify(engine, log_excerpt="=== RUN TestX\n--- fail: TestX\nFAIL").rule_id == 1
    assert classify(engine, log_excerpt="prefix --- FAIL: TestX").classified_by == FALLBACK


def test_the_sets_report_exactly_the_rules_that_match_one_by_one_on_every_worst_case_sample():
    engine = routing_config().rules
    assert len(engine) >= 30
    for _, sample in worst_case_samples("Connection refused"):
        assert engine.set_agrees(sample)


# --- bad patterns are refused, with the reason ---


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(fail)\1", "backreferences (\\1) are not supported"),
        (r"(?P<word>\w+) (?P=word)", "backreferences (?P=name) are not supported"),
        (r"error(?= in)", "look-ahead (?=...) is not supported"),
        (r"(?<!no )error", "negative look-behind (?<!...) is not supported"),
        (r"timeout\Z", "write \\z for the end of the text"),
        (r"a++", "a repetition of a repetition"),
        (r"(unclosed", "missing )"),
        (r"x{1001}", "repetition counts above 1000"),
    ],
)
def test_a_pattern_re2_cannot_compile_is_refused_with_the_reason(pattern, reason):
    with pytest.raises(InvalidRule) as refused:
        pattern_check(pattern=pattern, budget_ms=250)
    assert "does not compile" in refused.value.detail
    assert reason in refused.value.detail


@pytest.mark.parametrize("pattern", ["a*", "(error)?", "^$", "   "])
def test_a_pattern_that_matches_empty_text_is_refused(pattern):
    with pytest.raises(InvalidRule, match="empty"):
        pattern_check(pattern=pattern, budget_ms=250)


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a|aa)+b", r"(x+x+)+y", r"(.*a){20}", r"^(\w+\s?)*$x"])
def test_a_catastrophically_backtracking_pattern_runs_in_linear_time_and_is_accepted(pattern):
    started = time.perf_counter()
    pattern_check(pattern=pattern, budget_ms=1000)  # 5 samples of 64 KiB, each a backtracking killer
    assert time.perf_counter() - started < 1.0


def test_a_pattern_too_slow_on_the_worst_case_samples_is_refused_within_its_time_bound():
    slow = r"(\w+\s*){1,1000}x"  # linear in RE2, but a 15,000-instruction program on every byte
    started = time.perf_counter()
    with pytest.raises(InvalidRule) as refused:
        pattern_check(pattern=slow, budget_ms=50)
    assert "too slow" in refused.value.detail and "worst-case samples" in refused.value.detail
    assert time.perf_counter() - started < 2.0  # refused from the short runs, not after every sample


def test_every_default_rule_passes_the_checks_a_new_rule_must_pass(settings):
    for rule in ClassificationRule.objects.all():
        data = rule_validate(proposed={}, rule=rule)
        assert data["pattern"] == rule.pattern


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"stage": RuleStage.INFRASTRUCTURE, "failure_type": FailureType.UNIT_TEST}, "failure_type", "infrastructure"),
        ({"stage": RuleStage.NAME}, "stage", "log stage"),
        ({"field": RuleField.JOB, "stage": RuleStage.LOG}, "stage", "match the log excerpt"),
        ({"field": RuleField.EVENT_FIELD, "stage": RuleStage.NAME, "event_field": ""}, "event_field", "event field"),
        ({"tags": ["Rate Limited"]}, "tags", "not a tag"),
        ({"failure_type": "flaky"}, "failure_type", "not a valid choice"),
        ({"name": "runner-lost"}, "name", "already exists"),
    ],
)
def test_an_inconsistent_rule_is_refused_naming_the_field(changes, field, message):
    rule = ClassificationRule.objects.get(name="database-unreachable")
    with pytest.raises(InvalidRule) as refused:
        rule_validate(proposed=changes, rule=rule)
    assert refused.value.extra["field"] == field
    assert message in refused.value.detail


def test_an_ingested_failure_keeps_the_deciding_rule_its_version_the_line_its_tags_and_its_event(api):
    log = "Pulling postgres:16\nError response from daemon: toomanyrequests: You have reached your pull rate limit."
    response = api.post(
        "/api/v1/events/", event_body(job="integration-tests", log_excerpt=log), content_type="application/json"
    )

    failure = Failure.objects.get(pk=response.json()["id"])
    assert (failure.failure_type, failure.classified_by, failure.tags) == ("ci_runner", "runner-rate-limit",
                                                                         ["rate_limited"])  # fmt: skip
    assert (failure.classification_rule.name, failure.classification_rule_version) == ("runner-rate-limit", 1)
    assert failure.classification_text == log.splitlines()[1]
    assert failure.classification_event.log_excerpt == log
    assert failure.signature == "error response from daemon: toomanyrequests: you have reached your pull rate limit."
    opened = failure.timeline.get()
    assert (opened.data["classified_by"], opened.data["rule_version"], opened.data["tags"]) == (
        "runner-rate-limit",
        1,
        ["rate_limited"],
    )
