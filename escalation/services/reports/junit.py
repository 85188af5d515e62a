"""JUnit XML: parsed safely and streaming, stored in bulk, failing tests opened as failures.

Accepts what common runners write: a ``<testsuites>`` or ``<testsuite>`` root, nested suites, test
cases beside child suites, ``failure``/``error``/``skipped`` with or without attributes or text,
Surefire's ``flakyFailure``/``flakyError`` (failed, then passed on a rerun), byte-order marks,
``system-out``. Entity declarations and external entities are refused (defusedxml).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, iterparse
from django.db import connection
from django.db.models import Count, Sum

from escalation.choices import ReportKind, TestOutcome
from escalation.exceptions import MalformedReport, UnsafeXml, WrongReportFormat
from escalation.models import Failure, Report, TestResult
from escalation.models.failures import OPEN_Q
from escalation.services.flaky import flaky_record
from escalation.services.reports.upload import (
    Body,
    FailingItem,
    Upload,
    clean,
    item_label,
    items_report,
    labels_recover,
    run_flag,
    short_hash,
)
from escalation.services.statements import copy_types

_MESSAGE_LIMIT = 4000
_FIELD_LIMIT = 500
_CONTAINERS = frozenset({"testsuite", "testsuites"})
_FAILING = (TestOutcome.FAILED, TestOutcome.ERROR)


@dataclass(slots=True)
class TestCase:
    """One ``<testcase>`` as the runner reported it."""

    __test__ = False

    suite: str
    classname: str
    name: str
    file: str
    outcome: str
    duration: float | None
    message: str
    is_flaky: bool  # failed, then passed on a rerun within the same report (Surefire)

    @property
    def key(self) -> str:
        return short_hash(self.suite, self.classname, self.name)


def junit_cases(file: IO[bytes]) -> Iterator[TestCase]:
    """Yield the test cases of a JUnit XML document in document order, with bounded memory.

    Raises MalformedReport for broken XML, UnsafeXml for entity declarations or external
    entities, WrongReportFormat for another root element.
    """
    stack: list = []  # the open elements, the root first
    suites: list[str] = []
    try:
        for event, elem in iterparse(file, events=("start", "end")):
            tag = _local(elem.tag)
            if event == "start":
                if not stack and tag not in _CONTAINERS:
                    raise WrongReportFormat(f"the root element must be <testsuites> or <testsuite>, not <{tag}>")
                if tag == "testsuite":
                    suites.append(clean(elem.get("name"), _FIELD_LIMIT))
                stack.append(elem)
                continue
            stack.pop()
            if tag == "testcase":
                yield _case(elem, suites[-1] if suites else "")
            elif tag == "testsuite":
                suites.pop()
            if stack and _local(stack[-1].tag) in _CONTAINERS:
                # A suite's child that ended is read: drop it now, so that memory stays flat however
                # long the document. Its earlier siblings went the same way, so it is the first child.
                elem.clear()
                parent = stack[-1]
                if parent[0] is elem:
                    del parent[0]
                else:
                    parent.remove(elem)
    except DefusedXmlException as exc:
        raise UnsafeXml(f"the XML declares entities or references external ones, which are refused: {exc}") from None
    except ParseError as exc:
        raise MalformedReport(f"malformed XML: {exc}") from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2] if tag[:1] == "{" else tag


def _case(elem, suite: str) -> TestCase:
    outcome, detail, flaky = TestOutcome.PASSED, None, False
    for child in elem:
        tag = _local(child.tag)
        if tag == "failure" and outcome not in _FAILING:
            outcome, detail = TestOutcome.FAILED, child
        elif tag == "error" and outcome not in _FAILING:
            outcome, detail = TestOutcome.ERROR, child
        elif tag == "skipped" and outcome == TestOutcome.PASSED:
            outcome = TestOutcome.SKIPPED
        elif tag in ("flakyFailure", "flakyError"):
            flaky = True
    message = ""
    if detail is not None:
        message = "\n".join(part for part in (detail.get("message"), (detail.text or "").strip()) if part)
    return TestCase(
        suite=suite,
        classname=clean(elem.get("classname"), _FIELD_LIMIT),
        name=clean(elem.get("name"), _FIELD_LIMIT),
        file=clean(elem.get("file"), _FIELD_LIMIT),
        outcome=outcome,
        duration=_seconds(elem.get("time")),
        message=clean(message, _MESSAGE_LIMIT),
        is_flaky=flaky and outcome == TestOutcome.PASSED,
    )


def _seconds(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw.replace(",", ""))
    except ValueError:
        return None
    return value if value == value and abs(value) < 1e12 else None  # not NaN, storable


def junit_store(upload: Upload, body: Body) -> dict:
    """Parse the body into the upload's report: totals, per-test rows, failures, recoveries, flaky tests.

    1. Before parsing, load the few things a test is compared with: the open failures of this job's
       tests and the tests that failed earlier on this commit.
    2. Stream the test cases into the database in bulk, counting outcomes as they go.
    3. Failing tests open or recur their failures; tests that pass again recover theirs.
    4. A test that failed and passed on this commit is recorded as flaky.
    """
    prefix = item_label(upload.job.name, "x")[:-1]
    open_labels = set(
        Failure.objects.filter(
            OPEN_Q, repository=upload.repository, branch=upload.run.branch, job_name__startswith=prefix
        ).values_list("job_name", flat=True)
    )
    # A passed test is looked up by its name first: building every passed test's label costs more.
    open_names = _label_names(open_labels)
    earlier = _earlier_reports(upload)
    failed_before = dict(
        TestResult.objects.filter(report__in=earlier, outcome__in=_FAILING).values_list("test_key", "report__run_id")
    )
    counts = dict.fromkeys(TestOutcome.values, 0)
    failing: list[tuple[int, str, TestCase, str]] = []  # compact until reported: (index, label, case, key)
    to_recover: list[str] = []
    flaky: dict[str, tuple[str, int | None]] = {}  # test key -> (label, id of the failing run)
    passed = TestOutcome.PASSED  # a local: an enum member read from its class costs as much as the rest of a check
    with _ResultWriter(upload.report) as writer:
        job, add = upload.job.name, writer.add
        for index, case in enumerate(junit_cases(body.file)):
            outcome = case.outcome
            counts[outcome] += 1
            key = case.key
            add(case, key)
            if outcome == passed:  # most cases: only what a passed test is compared with
                if (
                    open_names
                    and case.name.rpartition(" › ")[2] in open_names
                    and ((label := _test_label(job, case)) in open_labels)
                ):
                    to_recover.append(label)
                if key in failed_before or case.is_flaky:
                    flaky[key] = (_test_label(job, case), failed_before.get(key, upload.run.pk))
            elif outcome in _FAILING:
                failing.append((index, _test_label(job, case), case, key))
    failing_keys = {key: label for _, label, _, key in failing}
    passed_before = TestResult.objects.filter(
        report__in=earlier, test_key__in_array=list(failing_keys), outcome=TestOutcome.PASSED
    ).values_list("test_key", flat=True)
    for key in set(passed_before):
        flaky.setdefault(key, (failing_keys[key], upload.run.pk))

    _totals(upload, counts)
    items_report(upload=upload, items=(_failing_item(*row) for row in failing), keep_failures=False)
    labels_recover(upload=upload, labels=sorted(set(to_recover)))
    _flaky_record(upload, flaky)
    return upload.receipt(
        tests=upload.report.tests,
        passed=upload.report.passed,
        failures=upload.report.failures,
        errors=upload.report.errors,
        skipped=upload.report.skipped,
        accepted=upload.report.tests,
        run_totals=_run_totals(upload),
    )


class _Everything:
    def __contains__(self, item: object) -> bool:
        return True


def _label_names(labels: set[str]) -> _Everything | set[str]:
    """What a passed test's name must end in for its label to be one of these: the labels' last parts,
    and "" (a test without a name is labelled by its class or as unnamed). Every name when a label was
    cut to fit (it ends in a hash)."""
    if any(" #" in label for label in labels):
        return _Everything()
    return {label.rpartition(" › ")[2] for label in labels} | {""} if labels else set()


def _test_label(job: str, case: TestCase) -> str:
    if not (case.suite or case.classname or case.name):
        return item_label(job, "(unnamed test)")
    return item_label(job, case.suite, case.classname, case.name)


def _failing_item(index: int, label: str, case: TestCase, key: str) -> FailingItem:
    identity = " › ".join(part for part in (case.suite, case.classname, case.file, case.name) if part)
    return FailingItem(
        key=str(index),
        label=label,
        text=case.message or f"{case.outcome}: {identity}",
        fields={
            "report": "junit",
            "test": identity,
            "suite": case.suite,
            "class": case.classname,
            "file": case.file,
            "name": case.name,
            "outcome": case.outcome,
            "key": key,
        },
    )


def _earlier_reports(upload: Upload):
    return Report.objects.filter(
        kind=ReportKind.JUNIT, run__repository=upload.repository, run__commit_sha=upload.run.commit_sha
    ).exclude(pk=upload.report.pk)


def _totals(upload: Upload, counts: dict[str, int]) -> None:
    report = upload.report
    report.tests = sum(counts.values())
    report.passed = counts[TestOutcome.PASSED]
    report.failures = counts[TestOutcome.FAILED]
    report.errors = counts[TestOutcome.ERROR]
    report.skipped = counts[TestOutcome.SKIPPED]
    report.has_zero_tests = report.tests == 0
    report.save()
    if report.has_zero_tests:
        upload.warn("zero_tests", "the report holds no test case; the run is flagged")
        run_flag(upload=upload, code="zero_tests", detail=f"JUnit report #{report.pk} held no test case")


def _run_totals(upload: Upload) -> dict[str, int]:
    """Every JUnit report of this run, all attempts and files, added up."""
    fields = ("tests", "passed", "failures", "errors", "skipped")
    totals = Report.objects.filter(
        kind=ReportKind.JUNIT,
        run__source=upload.run.source_id,
        run__repository=upload.repository,
        run__run_id=upload.run.run_id,
    ).aggregate(reports=Count("id"), **{name: Sum(name) for name in fields})
    return {name: totals[name] or 0 for name in ("reports", *fields)}


def _flaky_record(upload: Upload, flaky: dict[str, tuple[str, int | None]]) -> None:
    runs = {run.pk: run for run in type(upload.run).objects.filter(pk__in={run_id for _, run_id in flaky.values()})}
    for key, (label, run_id) in sorted(flaky.items()):
        observation = flaky_record(
            repository=upload.repository,
            job_name=upload.job.name,
            test_key=key,
            test_name=label,
            commit_sha=upload.run.commit_sha,
            failing_run=runs.get(run_id),
            now=upload.now,
        )
        if observation is not None:
            upload.flaky.append(label)


class _ResultWriter:
    """Writes test results as they are parsed: COPY on PostgreSQL, batched inserts elsewhere."""

    _CASE_FIELDS = ("suite", "classname", "name", "file", "outcome", "duration", "message")
    _COLUMNS = ("report_id", "test_key", *_CASE_FIELDS)
    _BATCH = 2000

    def __init__(self, report: Report):
        self.report_id = report.pk
        self.copy = None
        self.rows: list[TestResult] = []

    def __enter__(self) -> "_ResultWriter":
        if connection.vendor == "postgresql":
            self._cursor = connection.cursor()
            columns = ", ".join(self._COLUMNS)
            # Binary: psycopg writes these columns' values with half the CPU the text format's escaping takes.
            statement = f"COPY {TestResult._meta.db_table} ({columns}) FROM STDIN (FORMAT BINARY)"
            self._copy_cm = self._cursor.cursor.copy(statement)
            self.copy = self._copy_cm.__enter__()
            self.copy.set_types(copy_types(TestResult, self._COLUMNS))
            self.add = self._copy_add(self.copy.write_row, self.report_id)
        return self

    @staticmethod
    def _copy_add(write_row: Callable[[tuple], None], report_id: int) -> Callable[[TestCase, str], None]:
        """``add`` straight to COPY: called once per test case, it reads nothing from the writer."""

        def add(case: TestCase, key: str) -> None:
            write_row((report_id, key, case.suite, case.classname, case.name, case.file, case.outcome,
                       case.duration, case.message))  # fmt: skip

        return add

    def add(self, case: TestCase, key: str) -> None:
        """Batched inserts (not PostgreSQL, whose writer replaces this with ``_copy_add``)."""
        fields = {name: getattr(case, name) for name in self._CASE_FIELDS}
        self.rows.append(TestResult(report_id=self.report_id, test_key=key, **fields))
        if len(self.rows) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        TestResult.objects.bulk_create(self.rows)
        self.rows = []

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.copy is not None:
            try:
                self._copy_cm.__exit__(exc_type, exc, tb)
            finally:
                self._cursor.close()
        elif exc_type is None:
            self._flush()
