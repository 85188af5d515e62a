"""Fallout patterns: one small detector per rule code, registered in DETECTORS.

A detector reads the rule row (threshold, window, scope, ratio and samples are data) and the
window, and returns its hits: one per scope key whose triggers meet the rule. Detectors list their
triggers with the values every scope they support needs; ``scope_hits`` groups them by the rule's
scope, so an admin may change the scope. Adding a rule is a row of data and one function here.
"""

import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, F, Max, Q

from escalation.choices import FailureType, FalloutScope, JobStatus, ReportKind, TestOutcome
from escalation.models import (
    CIJob,
    Failure,
    FailureOccurrence,
    FalloutRule,
    FlakyObservation,
    TestResult,
    TimelineEntry,
)
from escalation.models.failures import TimelineKind

S = FalloutScope
_REPOSITORY_SCOPES = (S.REPOSITORY, S.JOB, S.TEST)  # a scope key of these names one repository: routed by it
_FAILING = [TestOutcome.FAILED, TestOutcome.ERROR]
DEFAULT_BRANCH_FALLBACK = "main"  # a repository whose default branch no webhook has reported yet


@dataclass(frozen=True)
class Window:
    """Where triggers count: from ``since`` to ``now``, and per scope key never before its last dismissal
    or closing (``cutoffs``), so a dismissed fallout is not proposed again from the same triggers."""

    since: datetime
    now: datetime
    cutoffs: dict[str, datetime] = field(default_factory=dict)

    def start(self, scope_key: str) -> datetime:
        cutoff = self.cutoffs.get(scope_key)
        return max(self.since, cutoff) if cutoff else self.since

    def holds(self, scope_key: str, at: datetime) -> bool:
        cutoff = self.cutoffs.get(scope_key)
        if cutoff is not None and at <= cutoff:
            return False
        return self.since <= at <= self.now


@dataclass(frozen=True)
class Trigger:
    """One thing that counts towards a pattern: when, which failures it names, what one count is,
    and its value for each scope the detector supports (empty: unknown, it counts in no scope)."""

    at: datetime
    count_key: Hashable
    failure_ids: tuple[int, ...] = ()
    scope: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    repository: str = ""
    facts: dict = field(default_factory=dict)


@dataclass
class Hit:
    """A scope whose triggers met the rule: what a fallout is opened from or added to."""

    scope_key: str
    label: str
    failure_ids: list[int]
    detail: dict
    repository: str = ""


Detector = Callable[[FalloutRule, Window], list[Hit]]


@dataclass(frozen=True)
class DetectorSpec:
    func: Detector
    scopes: tuple[str, ...]
    needs: tuple[str, ...] = ()  # rule fields the detector reads besides threshold and window


DETECTORS: dict[str, DetectorSpec] = {}


def detector(code: str, *, scopes: tuple[str, ...], needs: tuple[str, ...] = ()) -> Callable[[Detector], Detector]:
    def register(func: Detector) -> Detector:
        DETECTORS[code] = DetectorSpec(func=func, scopes=scopes, needs=needs)
        return func

    return register


# --- the shared grouping: every detector's triggers go through here ---


def scope_of(rule: FalloutRule, trigger: Trigger) -> tuple[str, str] | None:
    """The trigger's scope key and label under the rule's scope; None when the trigger lacks that value."""
    if rule.scope == S.GLOBAL:
        return "global", "everywhere"
    value = trigger.scope.get(rule.scope, "")
    if not value:
        return None
    return value[:300], trigger.labels.get(rule.scope, value)


def scope_groups(rule: FalloutRule, window: Window, triggers: Iterable[Trigger]) -> dict[str, tuple[str, list]]:
    """Triggers by scope key (with its label), each within its key's window."""
    groups: dict[str, tuple[str, list[Trigger]]] = {}
    for trigger in triggers:
        scoped = scope_of(rule, trigger)
        if scoped is None or not window.holds(scoped[0], trigger.at):
            continue
        groups.setdefault(scoped[0], (scoped[1], []))[1].append(trigger)
    return groups


def scope_hits(
    rule: FalloutRule,
    window: Window,
    triggers: Iterable[Trigger],
    *,
    unit: str,
    meets: Callable[[int, list[Trigger]], bool] | None = None,
    figures: Callable[[list[Trigger]], dict] | None = None,
) -> list[Hit]:
    """One hit per scope key whose distinct triggers reach the threshold (or satisfy ``meets``)."""
    hits = []
    for key, (label, members) in sorted(scope_groups(rule, window, triggers).items()):
        count = len({t.count_key for t in members})
        if not (meets(count, members) if meets else count >= rule.threshold):
            continue
        failure_ids = sorted({i for t in members for i in t.failure_ids})
        repositories = {t.repository for t in members}
        detail = {
            "count": count,
            "unit": unit,
            "threshold": rule.threshold,
            "window": _duration(rule.window),
            "since": window.start(key).isoformat(),
            "until": window.now.isoformat(),
            "failures": len(failure_ids),
            **(figures(members) if figures else {}),
        }
        repository = repositories.pop() if len(repositories) == 1 and rule.scope in _REPOSITORY_SCOPES else ""
        hits.append(Hit(scope_key=key, label=label, failure_ids=failure_ids, detail=detail, repository=repository))
    return hits


def _duration(value: timedelta) -> str:
    hours = value.total_seconds() / 3600
    return f"{hours / 24:g} d" if hours >= 24 and hours % 24 == 0 else f"{hours:g} h"


def _failure_scopes(row: dict, prefix: str = "failure__") -> dict[str, str]:
    repository = row[f"{prefix}repository__name"]
    return {
        S.REPOSITORY: repository,
        S.FAILURE_TYPE: row[f"{prefix}failure_type"],
        S.TEAM: row[f"{prefix}owner_team__name"] or "",
        S.JOB: f"{repository}:{row[f'{prefix}job_name']}",
    }


_FAILURE_VALUES = ("repository__name", "failure_type", "owner_team__name", "job_name")


def _occurrence_triggers(window: Window, failures: Q) -> list[Trigger]:
    """Each CI report (occurrence) of the matching failures in the window, with its job's runner label."""
    rows = FailureOccurrence.objects.filter(failures, seen_at__gte=window.since, seen_at__lte=window.now).values(
        "id", "failure_id", "seen_at", "event__job__runner_label", *(f"failure__{v}" for v in _FAILURE_VALUES)
    )
    return [
        Trigger(
            at=row["seen_at"],
            count_key=row["id"],
            failure_ids=(row["failure_id"],),
            scope={**_failure_scopes(row), S.RUNNER_LABEL: row["event__job__runner_label"]},
            repository=row["failure__repository__name"],
        )
        for row in rows
    ]


def _failure_triggers(failures, at_field: str) -> list[Trigger]:
    """One trigger per failure, at ``at_field``."""
    rows = failures.values("id", at_field, *_FAILURE_VALUES)
    return [
        Trigger(
            at=row[at_field],
            count_key=row["id"],
            failure_ids=(row["id"],),
            scope=_failure_scopes(row, prefix=""),
            repository=row["repository__name"],
        )
        for row in rows
    ]


# --- the detectors ---

_FAILURE_SCOPES = (S.GLOBAL, S.REPOSITORY, S.TEAM, S.JOB)


@detector("runner_hardening", scopes=(S.RUNNER_LABEL, *_FAILURE_SCOPES))
def runner_hardening(rule: FalloutRule, window: Window) -> list[Hit]:
    """ci_runner failures reported (each occurrence counts) in the window, per runner label of the job."""
    triggers = _occurrence_triggers(window, Q(failure__failure_type=FailureType.CI_RUNNER))
    return scope_hits(rule, window, triggers, unit="ci_runner occurrences")


@detector("connection_pool", scopes=(*_FAILURE_SCOPES, S.RUNNER_LABEL))
def connection_pool(rule: FalloutRule, window: Window) -> list[Hit]:
    """database_connectivity failures reported (each occurrence counts) in the window."""
    triggers = _occurrence_triggers(window, Q(failure__failure_type=FailureType.DATABASE_CONNECTIVITY))
    return scope_hits(rule, window, triggers, unit="database_connectivity occurrences")


@detector("scanner_rate_limits", scopes=(*_FAILURE_SCOPES, S.RUNNER_LABEL, S.FAILURE_TYPE))
def scanner_rate_limits(rule: FalloutRule, window: Window) -> list[Hit]:
    """Failures tagged rate_limited and reported in the window; each failure counts once."""
    occurrences = _occurrence_triggers(window, _tagged("rate_limited"))
    triggers = [Trigger(**{**t.__dict__, "count_key": t.failure_ids[0]}) for t in occurrences]
    return scope_hits(rule, window, triggers, unit="rate-limited failures")


def _tagged(tag: str) -> Q:
    """Occurrences of failures carrying the tag. SQLite (``make run``) has no JSON containment: there the
    tagged failures are picked in Python."""
    if connection.features.supports_json_field_contains:
        return Q(failure__tags__contains=[tag])
    tagged = [pk for pk, tags in Failure.objects.exclude(tags=[]).values_list("pk", "tags") if tag in tags]
    return Q(failure_id__in=tagged)


@detector("sla_misses", scopes=(S.FAILURE_TYPE, *_FAILURE_SCOPES))
def sla_misses(rule: FalloutRule, window: Window) -> list[Hit]:
    """Failures whose SLA was breached in the window."""
    failures = Failure.objects.filter(breached_at__gte=window.since, breached_at__lte=window.now)
    return scope_hits(rule, window, _failure_triggers(failures, "breached_at"), unit="SLA breaches")


@detector("cross_team_coordination", scopes=(S.GLOBAL, S.REPOSITORY, S.FAILURE_TYPE, S.JOB))
def cross_team_coordination(rule: FalloutRule, window: Window) -> list[Hit]:
    """Failures reassigned to another team (type corrected or reclassified) in the window, or breached in
    the window while owned by two teams (primary and secondary differ) and not acknowledged before it."""
    moves = TimelineEntry.objects.filter(
        kind__in=[TimelineKind.TYPE_CORRECTED, TimelineKind.RECLASSIFIED], at__gte=window.since, at__lte=window.now
    ).values("at", "data", *(f"failure__{v}" for v in ("id", *_FAILURE_VALUES)))
    triggers = [
        Trigger(
            at=row["at"],
            count_key=row["failure__id"],
            failure_ids=(row["failure__id"],),
            scope=_failure_scopes(row),
            repository=row["failure__repository__name"],
            facts={"reassigned": 1},
        )
        for row in moves
        if _reassigned(row["data"])
    ]
    breached = (
        Failure.objects.filter(breached_at__gte=window.since, breached_at__lte=window.now, secondary_team__isnull=False)
        .exclude(secondary_team=F("owner_team"))
        .exclude(acknowledged_at__lte=F("breached_at"))
    )
    triggers += [
        Trigger(**{**t.__dict__, "facts": {"breached_two_teams": 1}})
        for t in _failure_triggers(breached, "breached_at")
    ]

    def figures(members: list[Trigger]) -> dict:
        return {
            "reassigned": len({t.count_key for t in members if t.facts.get("reassigned")}),
            "breached_while_owned_by_two_teams": len(
                {t.count_key for t in members if t.facts.get("breached_two_teams")}
            ),
        }

    return scope_hits(rule, window, triggers, unit="failures", figures=figures)


def _reassigned(data: dict) -> bool:
    """A timeline entry that moved the failure between two teams (entries written before teams were
    recorded say nothing about teams and count for nothing)."""
    before, after = data.get("from_team"), data.get("to_team")
    return before is not None and after is not None and before != after


@detector("generator_complexity", scopes=_FAILURE_SCOPES)
def generator_complexity(rule: FalloutRule, window: Window) -> list[Hit]:
    """generator_drift failures first seen in the window."""
    failures = Failure.objects.filter(
        failure_type=FailureType.GENERATOR_DRIFT, first_seen_at__gte=window.since, first_seen_at__lte=window.now
    )
    return scope_hits(rule, window, _failure_triggers(failures, "first_seen_at"), unit="generator_drift failures")


@detector("flaky_test", scopes=(S.TEST, S.JOB, S.REPOSITORY, S.GLOBAL), needs=("ratio_percent", "min_samples"))
def flaky_test(rule: FalloutRule, window: Window) -> list[Hit]:
    """Per test: flaky observations (failed and passed on one commit; runs lost to infrastructure left
    out) reaching the threshold in the window, or at least min_samples results in the window of which
    ratio_percent or more failed. Triggers: the failures of those tests in the window."""
    observations = FlakyObservation.objects.filter(
        counts_for_statistics=True, observed_at__gte=window.since, observed_at__lte=window.now
    ).values("id", "repository__name", "job_name", "test_key", "test_name", "failure_id", "observed_at")
    triggers = [
        _test_trigger(
            row["repository__name"], row["job_name"], row["test_key"], row["test_name"] or row["job_name"],
            at=row["observed_at"], count_key=("observed", row["id"]),
            failure_ids=(row["failure_id"],) if row["failure_id"] else (),
        )
        for row in observations
    ]  # fmt: skip
    triggers += _failing_share(rule, window)
    failures = _test_failures(window, {t.facts["test"] for t in triggers})
    triggers = [
        Trigger(**{**t.__dict__, "failure_ids": tuple(sorted({*t.failure_ids, *failures.get(t.facts["test"], ())}))})
        for t in triggers
    ]

    def meets(count: int, members: list[Trigger]) -> bool:
        observed = len({t.count_key for t in members if t.count_key[0] == "observed"})
        return observed >= rule.threshold or any(t.count_key[0] == "share" for t in members)

    def figures(members: list[Trigger]) -> dict:
        shares = [t.facts for t in members if t.count_key[0] == "share"]
        observed = len({t.count_key for t in members if t.count_key[0] == "observed"})
        return {
            "count": observed,
            "observations": observed,
            "failing_share": [{k: s[k] for k in ("label", "runs", "failed", "percent")} for s in shares],
            "ratio_percent": rule.ratio_percent,
            "min_samples": rule.min_samples,
        }

    return scope_hits(rule, window, triggers, unit="flaky observations", meets=meets, figures=figures)


def _test_trigger(repository: str, job: str, test_key: str, label: str, **kwargs) -> Trigger:
    test = f"{repository}:{job}:{test_key}"
    return Trigger(
        scope={S.TEST: test, S.JOB: f"{repository}:{job}", S.REPOSITORY: repository},
        labels={S.TEST: f"{repository}: {label}", S.JOB: f"{repository}: {job}"},
        repository=repository,
        **{**kwargs, "facts": {"test": (repository, job, test_key), **kwargs.get("facts", {})}},
    )


def _failing_share(rule: FalloutRule, window: Window) -> list[Trigger]:
    """A trigger for each test with min_samples results or more whose failed share reaches ratio_percent."""
    if not rule.min_samples or rule.ratio_percent is None:
        return []
    triggers = []
    for row in _shares(rule, window.since, window.now):
        repository, job, key = row["report__run__repository__name"], row["report__job__name"], row["test_key"]
        label = " › ".join(p for p in (job, row["classname"], row["name"]) if p)
        trigger = _test_trigger(repository, job, key, label, at=row["at"], count_key=("share", repository, job, key))
        scoped = scope_of(rule, trigger)
        start = window.start(scoped[0]) if scoped else window.since
        if start > window.since:  # dismissed since: only results after the dismissal count
            row = next(iter(_shares(rule, start, window.now, test=(repository, job, key))), None)
            if row is None:
                continue
        facts = {"label": label, "runs": row["runs"], "failed": row["failed"], "percent": row["percent"]}
        triggers.append(Trigger(**{**trigger.__dict__, "at": row["at"], "facts": {**trigger.facts, **facts}}))
    return triggers


def _shares(rule: FalloutRule, since: datetime, now: datetime, test: tuple | None = None) -> list[dict]:
    results = TestResult.objects.filter(
        report__kind=ReportKind.JUNIT, report__received_at__gt=since, report__received_at__lte=now
    ).exclude(outcome=TestOutcome.SKIPPED)
    if test is not None:
        results = results.filter(report__run__repository__name=test[0], report__job__name=test[1], test_key=test[2])
    else:  # only tests that failed at all in the window: a few of the many that ran
        failed_keys = results.filter(outcome__in=_FAILING).values_list("test_key", flat=True).distinct()
        results = results.filter(test_key__in=list(failed_keys))
    rows = (
        results.values("report__run__repository__name", "report__job__name", "test_key")
        .annotate(
            runs=Count("id"),
            failed=Count("id", filter=Q(outcome__in=_FAILING)),
            at=Max("report__received_at"),
            name=Max("name"),
            classname=Max("classname"),
        )
        .filter(runs__gte=rule.min_samples, failed__gt=0)
        .order_by("report__run__repository__name", "report__job__name", "test_key")
    )
    found = []
    for row in rows:
        if row["failed"] * 100 >= rule.ratio_percent * row["runs"]:
            found.append({**row, "percent": round(row["failed"] * 100 / row["runs"], 1)})
    return found


def _test_failures(window: Window, tests: set[tuple]) -> dict[tuple, set[int]]:
    """The failures that failing runs of these tests reported in the window (a failing JUnit test is a
    CI event of its job whose ``key`` field is the test's identity); whole-job tests: the job's own."""
    if not tests:
        return {}
    keys = {key for _, _, key in tests if key}
    jobs = {job for _, job, key in tests if not key}
    rows = FailureOccurrence.objects.filter(
        Q(event__event_fields__key__in=sorted(keys)) | Q(failure__job_name__in=sorted(jobs)),
        seen_at__gte=window.since,
        seen_at__lte=window.now,
    ).values("failure_id", "failure__repository__name", "event__job__name", "event__event_fields__key")
    found: dict[tuple, set[int]] = defaultdict(set)
    for row in rows:
        key = row["event__event_fields__key"] or ""
        test = (row["failure__repository__name"], row["event__job__name"], key if key in keys else "")
        if test in tests:
            found[test].add(row["failure_id"])
    return found


@detector("build_performance", scopes=(S.JOB, S.REPOSITORY, S.GLOBAL), needs=("ratio_percent", "min_samples"))
def build_performance(rule: FalloutRule, window: Window) -> list[Hit]:
    """Finished default-branch jobs in the window that took more than ratio_percent over their baseline:
    the median duration of the job's previous min_samples successful default-branch runs. Fewer such
    runs: no baseline and no finding (missing data is never a finding)."""
    if not rule.min_samples or rule.ratio_percent is None:
        return []
    candidates = _default_branch_jobs().filter(finished_at__gte=window.since, finished_at__lte=window.now)
    pairs = sorted(set(candidates.values_list("run__repository__name", "name")))
    triggers = []
    for repository, job in pairs:
        triggers += _slow_runs(rule, window, repository, job)

    def figures(members: list[Trigger]) -> dict:
        runs = sorted((t.facts for t in members), key=lambda f: f["finished_at"])
        return {"slow_runs": runs, "ratio_percent": rule.ratio_percent, "baseline_runs": rule.min_samples}

    return scope_hits(rule, window, triggers, unit="slow runs", figures=figures)


def _default_branch_jobs():
    return CIJob.objects.filter(
        started_at__isnull=False, finished_at__isnull=False, finished_at__gt=F("started_at")
    ).filter(
        Q(run__branch=F("run__repository__default_branch"))
        | Q(run__repository__default_branch="", run__branch=DEFAULT_BRANCH_FALLBACK)
    )


def _slow_runs(rule: FalloutRule, window: Window, repository: str, job: str) -> list[Trigger]:
    """The job's runs in the window slower than their baseline, each compared with the runs before it."""
    jobs = _default_branch_jobs().filter(run__repository__name=repository, name=job, finished_at__lte=window.now)
    fields = ("id", "status", "started_at", "finished_at", "run__run_id", "run__attempt", "url")
    earlier = jobs.filter(status=JobStatus.SUCCESS, finished_at__lt=window.since).order_by("-finished_at", "-id")
    green = [(r["finished_at"] - r["started_at"]).total_seconds() for r in earlier.values(*fields)[: rule.min_samples]]
    green.reverse()
    runs = list(jobs.filter(finished_at__gte=window.since).order_by("finished_at", "id").values(*fields))
    triggers = []
    for run in runs:
        seconds = (run["finished_at"] - run["started_at"]).total_seconds()
        if len(green) >= rule.min_samples:
            baseline = statistics.median(green[-rule.min_samples :])
            if seconds > baseline * (100 + rule.ratio_percent) / 100:
                triggers.append(_slow_trigger(repository, job, run, seconds, baseline))
        if run["status"] == JobStatus.SUCCESS:
            green.append(seconds)
    return triggers


def _slow_trigger(repository: str, job: str, run: dict, seconds: float, baseline: float) -> Trigger:
    return Trigger(
        at=run["finished_at"],
        count_key=run["id"],
        scope={S.JOB: f"{repository}:{job}", S.REPOSITORY: repository},
        labels={S.JOB: f"{repository}: {job}"},
        repository=repository,
        facts={
            "job": job,
            "run": run["run__run_id"],
            "attempt": run["run__attempt"],
            "url": run["url"],
            "finished_at": run["finished_at"].isoformat(),
            "duration_seconds": round(seconds, 1),
            "baseline_seconds": round(baseline, 1),
            "over_baseline_percent": round((seconds / baseline - 1) * 100, 1) if baseline else None,
        },
    )
