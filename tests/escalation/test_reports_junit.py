"""POST /api/v1/reports/junit/: every real runner's file, counted independently of the portal's parser."""

import hashlib
import xml.etree.ElementTree as ET  # the fixtures are trusted: the stdlib parser is the independent count
from collections import Counter

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from escalation.choices import FailureStatus, FailureType, Resolution, Scope
from escalation.models import CIEvent, Failure, FlakyObservation, Report, RunFlag, TestResult
from escalation.services.failures import failure_fingerprint
from escalation.services.reports.upload import FAILING_TEST, item_label, short_hash
from escalation.services.sources import source_create
from portal.audit import Actor
from tests.escalation.ingest_support import TARGET, error, fixture, fixtures_of, ok, row_counts, upload

pytestmark = pytest.mark.django_db

CAT = "junit"
PYTEST = "EnricoMi-publish-unit-test-result-action__pytest-junit.fail.xml"
SUREFIRE = "mikepenz-action-junit-report__surefire-TEST-EmailAddressTest.xml"
GO = "jstemmer-go-junit-report__001-report.xml"
DOTNET = "spekt-junit.testlogger__dotnet-TestResults.xml"


def expected(body: bytes) -> dict:
    """Outcomes counted with the standard library's tree parser, each test case with its innermost suite."""
    root = ET.fromstring(body)
    cases = []

    def walk(element, suite):
        for child in element:
            tag = child.tag
            if tag == "testsuite":
                walk(child, child.get("name", ""))
            elif tag == "testcase":
                kinds = {grandchild.tag for grandchild in child}
                outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds
                           else "skipped" if "skipped" in kinds else "passed")  # fmt: skip
                cases.append((suite, child.get("classname", ""), child.get("name", ""), outcome))

    walk(root, root.get("name", "") if root.tag == "testsuite" else "")
    counts = Counter(case[3] for case in cases)
    failing = {case[:3] for case in cases if case[3] in ("failed", "error")}
    return {"cases": cases, "counts": counts, "failing": failing}


@pytest.mark.parametrize("name", fixtures_of(CAT))
def test_each_real_junit_file_is_counted_from_its_test_cases(api, name):
    raw = fixture(CAT, name)
    want = expected(raw)
    body = ok(upload(api, "junit", raw))
    assert body["tests"] == len(want["cases"])
    assert body["passed"] == want["counts"]["passed"]
    assert body["failures"] == want["counts"]["failed"]
    assert body["errors"] == want["counts"]["error"]
    assert body["skipped"] == want["counts"]["skipped"]
    report = Report.objects.get()
    assert (report.tests, report.failures, report.errors, report.skipped) == (
        body["tests"], body["failures"], body["errors"], body["skipped"]
    )  # fmt: skip
    assert TestResult.objects.filter(report=report).count() == len(want["cases"])
    stored = Counter(TestResult.objects.values_list("outcome", flat=True))
    assert stored == Counter({k: v for k, v in want["counts"].items()})
    assert Failure.objects.count() == len(want["failing"])  # one failure per failing test identity
    assert len(body["failures_opened"]) == len(want["failing"])


def test_the_known_facts_of_the_real_files_hold():
    """What SOURCES.tsv says each file holds, as counted by the independent parser."""
    assert expected(fixture(CAT, DOTNET))["counts"] == Counter(passed=32, failed=14, skipped=6)
    assert expected(fixture(CAT, SUREFIRE))["counts"] == Counter(passed=2, failed=2, error=5)
    assert expected(fixture(CAT, PYTEST))["counts"] == Counter(passed=3, failed=1, skipped=1)
    assert fixture(CAT, DOTNET).startswith(b"\xef\xbb\xbf")  # the BOM the parser must accept


def test_a_failing_test_opens_a_failure_whose_fingerprint_includes_the_tests_identity(api):
    ok(upload(api, "junit", fixture(CAT, PYTEST)))
    failure = Failure.objects.get()
    label = item_label(TARGET["job"], "pytest", "test.test_spark.SparkTests", "test_rsh_events")
    assert failure.job_name == label
    assert failure.fingerprint == failure_fingerprint(
        repository=TARGET["repository"], branch=TARGET["branch"], job=label, failure_type=failure.failure_type
    )
    assert failure.failure_type == FailureType.UNIT_TEST
    event = failure.occurrences.get().event
    assert "test_rsh_events" in event.log_excerpt  # the failure message, kept as the event's log
    result = TestResult.objects.get(name="test_rsh_events")
    assert (result.file, result.outcome, result.duration) == ("test/test_spark.py", "failed", 7.541)


def test_the_classification_rules_type_a_failing_test_by_its_message(api):
    raw = fixture(CAT, PYTEST).replace(
        b"self = &lt;test_spark", b"psycopg.OperationalError: could not connect to server"
    )
    ok(upload(api, "junit", raw))
    assert Failure.objects.get().failure_type == FailureType.DATABASE_CONNECTIVITY


def test_the_same_upload_twice_is_stored_once(api):
    first = ok(upload(api, "junit", fixture(CAT, PYTEST)))
    counts = row_counts()
    again = ok(upload(api, "junit", fixture(CAT, PYTEST)), 200)
    assert again["duplicate"] is True
    assert again["report_id"] == first["report_id"]
    assert row_counts() == counts


def test_several_files_and_attempts_of_one_run_add_up(api):
    a = ok(upload(api, "junit", fixture(CAT, PYTEST)))
    b = ok(upload(api, "junit", fixture(CAT, GO)))
    c = ok(upload(api, "junit", fixture(CAT, DOTNET), attempt=2))
    assert Report.objects.count() == 3
    totals = c["run_totals"]
    assert totals["reports"] == 3
    for key in ("tests", "passed", "failures", "errors", "skipped"):
        assert totals[key] == a[key] + b[key] + c[key]
    assert b["run_totals"]["tests"] == a["tests"] + b["tests"]


def test_an_upload_with_zero_tests_is_accepted_with_a_warning_and_flags_the_run(api):
    body = ok(upload(api, "junit", b'<?xml version="1.0"?>\n<testsuites name="empty"></testsuites>\n'))
    assert body["tests"] == 0
    assert [w["code"] for w in body["warnings"]] == ["zero_tests"]
    flag = RunFlag.objects.get()
    assert flag.code == "zero_tests"
    assert flag.run.run_id == TARGET["run_id"]
    assert Report.objects.get().has_zero_tests is True


def without_failures(raw: bytes) -> bytes:
    """The same report in which every failing test passed (the real file, its failure elements removed)."""
    root = ET.fromstring(raw)
    for case in root.iter("testcase"):
        for child in list(case):
            if child.tag in ("failure", "error"):
                case.remove(child)
    return ET.tostring(root, encoding="utf-8")


def test_a_test_that_failed_and_passed_on_one_commit_is_flaky_and_recovers(api):
    ok(upload(api, "junit", fixture(CAT, PYTEST)))
    failure = Failure.objects.get()
    body = ok(upload(api, "junit", without_failures(fixture(CAT, PYTEST)), attempt=2))
    failure.refresh_from_db()
    assert (failure.status, failure.resolution) == (FailureStatus.RESOLVED, Resolution.RECOVERED)
    assert body["recovered"] == [failure.pk]
    assert body["flaky"] == [failure.job_name]
    observation = FlakyObservation.objects.get()
    assert (observation.commit_sha, observation.test_name) == (TARGET["commit"], failure.job_name)


def test_a_test_that_passed_first_and_failed_later_on_one_commit_is_flaky_too(api):
    ok(upload(api, "junit", without_failures(fixture(CAT, PYTEST))))
    body = ok(upload(api, "junit", fixture(CAT, PYTEST), attempt=2))
    assert len(body["flaky"]) == 1
    assert FlakyObservation.objects.count() == 1


def test_a_test_passing_on_another_commit_recovers_but_is_not_flaky(api):
    ok(upload(api, "junit", fixture(CAT, PYTEST)))
    body = ok(upload(api, "junit", without_failures(fixture(CAT, PYTEST)), commit="a1b2c3d", run_id="4712"))
    assert len(body["recovered"]) == 1
    assert body["flaky"] == []
    assert not FlakyObservation.objects.exists()


def test_surefires_flaky_reruns_count_as_passed_and_flaky(api):
    raw = fixture(CAT, SUREFIRE)
    root = ET.fromstring(raw)
    passing = [c for c in root.iter("testcase") if not len(c)]
    ET.SubElement(passing[0], "flakyFailure", message="expected:<1> but was:<2>", type="AssertionError")
    body = ok(upload(api, "junit", ET.tostring(root, encoding="utf-8")))
    assert body["passed"] == expected(raw)["counts"]["passed"]
    assert len(body["flaky"]) == 1


def test_go_junit_reports_build_errors_as_failing_tests(api):
    raw = fixture(CAT, GO).replace(
        b"</testsuites>",
        b'<testsuite name="package/broken" tests="1" errors="1">'
        b'<testcase name="[build failed]" classname="package/broken"><error message="Build error">'
        b"<![CDATA[./x.go:3:2: undefined: y]]></error></testcase></testsuite></testsuites>",
    )  # fmt: skip
    body = ok(upload(api, "junit", raw))
    assert body["errors"] == 1
    failure = Failure.objects.get(job_name__contains="[build failed]")
    assert failure.failure_type == FailureType.BUILD_ERROR  # the compiler-error rule reads the go error line


def no_rows_after(response, counts, status, code, *named):
    error(response, status, code, *named)
    assert row_counts() == counts


@pytest.mark.parametrize(
    ("body", "status", "code", "named"),
    [
        (fixture(CAT, PYTEST)[:900], 400, "malformed_report", "malformed XML"),
        (b"<html><body>not a report</body></html>", 400, "wrong_format", "<html>"),
        (fixture("sarif", "gitleaks__sarif_simple.sarif"), 400, "malformed_report", "malformed XML"),
        (b"", 400, "malformed_report", "empty"),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            b"<testsuites><testsuite name='&lol2;'/></testsuites>",
            400, "unsafe_xml", "entities",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b"<testsuites><testsuite name='&xxe;'/></testsuites>",
            400, "unsafe_xml", "entities",
        ),
    ],
    ids=["truncated", "wrong-root", "json-body", "empty", "entity-expansion", "external-entity"],
)  # fmt: skip
def test_a_malformed_document_answers_400_naming_the_problem_and_stores_nothing(api, body, status, code, named):
    counts = row_counts()
    no_rows_after(upload(api, "junit", body), counts, status, code, named)


def test_a_document_broken_after_thousands_of_stored_rows_stores_nothing(api):
    cases = "".join(f'<testcase classname="c" name="t{i}"/>' for i in range(5000))
    broken = f'<testsuites><testsuite name="s">{cases}<testcase name="x"><failure>'.encode()
    counts = row_counts()
    no_rows_after(upload(api, "junit", broken), counts, 400, "malformed_report", "malformed XML")
    assert not CIEvent.objects.exists()


@override_settings(PORTAL_MAX_REPORT_BYTES=2048)
def test_a_body_over_the_report_limit_answers_413_and_stores_nothing(api):
    counts = row_counts()
    no_rows_after(upload(api, "junit", fixture(CAT, DOTNET)), counts, 413, "payload_too_large", "2048")


@pytest.mark.parametrize("missing", ["repository", "branch", "commit", "run_id", "job"])
def test_a_missing_run_parameter_answers_400_naming_it(api, missing):
    counts = row_counts()
    params = {k: v for k, v in TARGET.items() if k != missing}
    response = api.generic(
        "POST", "/api/v1/reports/junit/?" + "&".join(f"{k}={v}" for k, v in params.items()), fixture(CAT, PYTEST),
        content_type="application/xml",
    )  # fmt: skip
    no_rows_after(response, counts, 400, "invalid", missing)


@pytest.mark.parametrize(("params", "named"), [({"attempt": "0"}, "attempt"), ({"attempt": "two"}, "attempt"),
                                               ({"colour": "blue"}, "colour")])  # fmt: skip
def test_a_bad_or_unknown_parameter_answers_400(api, params, named):
    counts = row_counts()
    no_rows_after(upload(api, "junit", fixture(CAT, PYTEST), **params), counts, 400, "invalid", named)


def test_without_a_token_the_upload_answers_401_and_with_a_read_token_403():
    _, read_token = source_create(name="dash", scopes=[Scope.READ], actor=Actor.task("t"), now=timezone.now())
    counts = row_counts()
    error(upload(Client(), "junit", fixture(CAT, PYTEST)), 401, "not_authenticated")
    reader = Client(headers={"authorization": f"Bearer {read_token}"})
    error(upload(reader, "junit", fixture(CAT, PYTEST)), 403, "permission_denied", "ingest")
    assert row_counts() == counts


def failing_suite(*cases: tuple[str, str, str]) -> bytes:
    """A Surefire-shaped report whose test cases (classname, name, file) all fail."""
    rows = "".join(
        f'<testcase classname="{classname}" name="{name}" file="{file}" time="0.1">'
        f'<failure message="expected 3 but was 4">expected 3 but was 4</failure></testcase>'
        for classname, name, file in cases
    )
    return f'<testsuite name="crafted" tests="{len(cases)}" failures="{len(cases)}">{rows}</testsuite>'.encode()


def types_by_test() -> dict[str, str]:
    return {
        event.event_fields["test"]: event.occurrence.failure.failure_type
        for event in CIEvent.objects.select_related("occurrence__failure").exclude(event_fields={})
    }


REAL_FILE_TYPES = [
    # PHPUnit's own end-to-end tests live in tests/end-to-end/: the file names them integration tests.
    ("dorny-test-reporter__phpunit.xml", {FailureType.INTEGRATION_TEST}),
    (PYTEST, {FailureType.UNIT_TEST}),  # test/test_spark.py::SparkTests::test_rsh_events
    (SUREFIRE, {FailureType.UNIT_TEST}),  # EmailAddressTest: not *IT, no keyword
    (GO, {FailureType.UNIT_TEST}),  # package/fail TestOne
    (DOTNET, {FailureType.UNIT_TEST}),  # JUnit.Xml.TestLogger...UnitTest1.FailTest11 and the like
    ("onozaty-junit-xml2csv__gradle-TestCase1.xml", {FailureType.UNIT_TEST}),
    ("dorny-test-reporter__jest-junit.xml", {FailureType.UNIT_TEST}),
]


@pytest.mark.parametrize(("name", "types"), REAL_FILE_TYPES, ids=[row[0] for row in REAL_FILE_TYPES])
def test_the_test_identity_rules_type_the_failing_tests_of_the_real_files(api, name, types):
    ok(upload(api, "junit", fixture(CAT, name)))
    assert set(types_by_test().values()) == types
    assert set(Failure.objects.values_list("failure_type", flat=True)) == types


@pytest.mark.parametrize(
    ("case", "failure_type", "rule"),
    [
        (("com.acme.shop.OrderServiceIT", "placesOrder", ""), FailureType.INTEGRATION_TEST, "test-failsafe-it"),
        (("com.acme.shop.CheckoutITCase", "paysByCard", ""), FailureType.INTEGRATION_TEST, "test-failsafe-it"),
        (("tests.integration.test_api", "test_create_order", "tests/integration/test_api.py"),
         FailureType.INTEGRATION_TEST, "test-integration"),
        (("checkout", "pays by card", "e2e/checkout.spec.ts"), FailureType.INTEGRATION_TEST, "test-integration"),
        (("cart", "adds an item", "cypress/e2e/cart.cy.ts"), FailureType.INTEGRATION_TEST, "test-integration"),
        (("com.acme.shop.UserRepositoryTest", "findsByEmail", ""), FailureType.DATABASE_TEST, "test-database"),
        (("com.acme.shop.OrderDaoTest", "savesOrder", ""), FailureType.DATABASE_TEST, "test-database"),
        (("tests.db.test_models", "test_unique_sku", "tests/db/test_models.py"),
         FailureType.DATABASE_TEST, "test-database"),
        (("tests.test_tenancy", "test_rls_hides_other_tenants", ""), FailureType.DATABASE_TEST, "test-database"),
        (("com.acme.shop.UserDbTest", "migrates", ""), FailureType.DATABASE_TEST, "test-database"),
        (("tests.test_auth", "test_expired_jwt_is_refused", ""), FailureType.AUTH_CHANGE, "test-auth"),
        (("com.acme.shop.OAuthCallbackTest", "exchangesCode", ""), FailureType.AUTH_CHANGE, "test-auth"),
        (("tests.test_views", "test_session_expires_after_logout", ""), FailureType.AUTH_CHANGE, "test-auth"),
        (("github.com/acme/shop/cart", "BenchmarkTotal", ""), FailureType.PERFORMANCE_REGRESSION, "test-performance"),
        (("tests.test_perf", "test_search_latency", ""), FailureType.PERFORMANCE_REGRESSION, "test-performance"),
        # no convention: the job "unit-tests" decides; words that merely contain a keyword do not count
        (("tests.test_cart", "test_total", "tests/test_cart.py"), FailureType.UNIT_TEST, "job-unit-test"),
        (("tests.test_feedback", "test_submit_form", ""), FailureType.UNIT_TEST, "job-unit-test"),
        (("com.acme.shop.AuthorTest", "printsName", ""), FailureType.UNIT_TEST, "job-unit-test"),
    ],
    ids=lambda value: value[1] if isinstance(value, tuple) else None,
)  # fmt: skip
def test_the_test_identity_rules_type_a_failing_test_by_its_suite_class_file_and_name(api, case, failure_type, rule):
    ok(upload(api, "junit", failing_suite(case)))
    failure = Failure.objects.get()
    assert (failure.failure_type, failure.classified_by) == (failure_type, rule)
    event = failure.occurrences.get().event
    assert (event.event_fields["class"], event.event_fields["name"]) == case[:2]  # kept for rule changes


def test_the_test_identity_rules_are_data_in_the_name_stage_before_the_job_rules():
    from escalation.choices import RuleStage
    from escalation.models import ClassificationRule

    rules = ClassificationRule.objects.filter(name__startswith="test-", field="event_field")
    assert {r.name for r in rules} >= {"test-performance", "test-database", "test-auth", "test-integration",
                                       "test-failsafe-it"}  # fmt: skip
    job_rules = ClassificationRule.objects.filter(stage=RuleStage.NAME, field="job")
    assert all(r.stage == RuleStage.NAME for r in rules)
    assert max(r.position for r in rules) < min(r.position for r in job_rules)


def test_a_failing_test_no_rule_types_is_a_unit_test(api):
    ok(upload(api, "junit", failing_suite(("tests.test_cart", "test_total", "tests/test_cart.py")), job="ci"))
    failure = Failure.objects.get()
    assert (failure.failure_type, failure.classified_by) == (FailureType.UNIT_TEST, FAILING_TEST)


def test_test_results_are_keyed_by_identity_and_go_with_their_report(api):
    raw = fixture(CAT, SUREFIRE)
    ok(upload(api, "junit", raw))
    report = Report.objects.get()
    suite = ET.fromstring(raw)
    stored = {(r.classname, r.name): r.test_key for r in TestResult.objects.filter(report=report)}
    assert len(stored) == len({(c.get("classname", ""), c.get("name", "")) for c in suite.iter("testcase")})
    for (classname, name), key in stored.items():
        # the key every other reader of test identities computes (flaky records, earlier reports)
        assert key == short_hash(suite.get("name", ""), classname, name)
    report.delete()  # the results have no database constraint: Django deletes them with their report
    assert not TestResult.objects.exists()


def test_short_hash_is_the_blake2b_of_the_parts_as_text_whatever_their_types():
    """Stored test keys and finding keys are compared across uploads: the hash of given parts never changes."""

    def expected(*texts: str) -> str:
        return hashlib.blake2b("\x1f".join(texts).encode(), digest_size=16).hexdigest()

    assert short_hash("pytest", "tests.test_x", "test_y") == expected("pytest", "tests.test_x", "test_y")
    assert short_hash("semgrep", 12, None, FailureStatus.OPEN) == expected("semgrep", "12", "None", "open")
    assert short_hash() == expected()

    class Label(str):  # a string whose str() is not its text
        def __str__(self) -> str:
            return "a label"

    assert short_hash("pytest", Label("unit")) == expected("pytest", "unit")
    assert short_hash(7, Label("unit")) == expected("7", "unit")


def test_each_test_result_is_stored_as_the_report_gives_it(api):
    """The results go in by binary COPY: text with tabs, backslashes and other scripts, missing times and
    attributes come back exactly."""
    body = (
        '<testsuite name="ünït&#9;suite">'
        '<testcase classname="pkg\\Mod" name="test_ß[a\\nb]" file="t/ü.py" time="0.25"/>'
        '<testcase name="no_class_no_time"/>'
        '<testcase classname="c" name="fails" time="1,234.5">'
        '<failure message="got&#9;1">line 1\nline 2 \\ end</failure>'
        "</testcase></testsuite>"
    ).encode()
    ok(upload(api, "junit", body))
    stored = list(TestResult.objects.order_by("id").values_list("suite", "classname", "name", "file", "outcome",
                                                                "duration", "message"))  # fmt: skip
    assert stored == [
        ("ünït\tsuite", "pkg\\Mod", "test_ß[a\\nb]", "t/ü.py", "passed", 0.25, ""),
        ("ünït\tsuite", "", "no_class_no_time", "", "passed", None, ""),
        ("ünït\tsuite", "c", "fails", "", "failed", 1234.5, "got\t1\nline 1\nline 2 \\ end"),
    ]
    assert TestResult.objects.filter(test_key=short_hash("ünït\tsuite", "c", "fails")).count() == 1
