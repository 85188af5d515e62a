"""Classification benchmark: the RE2 rule engine's throughput, and the time of rule-change previews.

Run it with `make bench-classify` (or `scripts/with-postgres.sh .venv/bin/python bench/classify.py`),
which gives it a throwaway PostgreSQL through DATABASE_URL. It migrates that database, then:

1. builds 200 rules: the default set plus generated ones (log patterns in stages 2 and 4, job-name
   patterns in stage 3), and 10,000 log excerpts of 4 to 64 KiB: a line of the test corpus
   (tests/data/classification/log_lines.yaml), sometimes two, near the end of realistic CI noise
   (package downloads, compiler progress, passing tests, timestamps), one in ten with no error line;
2. classifies every excerpt with the engine on one core (this process, one thread) and prints
   excerpts/s and MB/s; then the same rules as a loop over Python `re` patterns, on a sample, for
   comparison, checking that both give the same type;
3. stores 100,000 failures (first seen in the last 30 days, classified by those 200 rules, each with
   its event and log excerpt, `--stored-kib` sized) and times three previews: an edit of a job-name
   rule, an edit of a log rule, and a new rule in the infrastructure stage, the worst case, which
   must read every rule-decided failure's log.

Goals (issue #4): at least 5,000 excerpts/s; a preview over 100,000 stored failures under 10 s.
"""

import argparse
import os
import random
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

RATE_GOAL = 5000
PREVIEW_GOAL_S = 10.0
CORPUS = BASE_DIR / "tests" / "data" / "classification" / "log_lines.yaml"
WORDS = [
    "cart",
    "billing",
    "ledger",
    "invoice",
    "search",
    "catalog",
    "payments",
    "shipping",
    "orders",
    "profile",
    "inventory",
    "pricing",
    "reports",
    "gateway",
    "session",
    "notify",
    "media",
    "export",
    "import",
    "audit",
]


def noise_line(rnd: random.Random) -> str:
    """One line of a passing CI log: what surrounds the error in real excerpts."""
    word, n = rnd.choice(WORDS), rnd.randint(1, 99_999)
    stamp = f"2024-05-{rnd.randint(10, 28)}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}"
    return rnd.choice(
        [
            f"{stamp}.{n:07d}Z Downloading https://registry.npmjs.org/{word}/-/{word}-{n % 9}.{n % 13}.{n % 7}.tgz",
            f"Collecting {word}-utils=={n % 5}.{n % 11}.{n % 3} (from -r requirements.txt (line {n % 90}))",
            f"tests/{word}/test_{word}_{n % 400}.py::test_{word}_{n} PASSED{' ' * (n % 20)}[ {n % 100:2d}%]",
            f"ok  \tgithub.com/acme/{word}/internal/{word}{n % 30}\t0.{n % 999:03d}s",
            f"#{n % 40} [builder {n % 9}/9] RUN pip install --no-cache-dir -r requirements.txt",
            f"[INFO] --- maven-surefire-plugin:3.2.5:test (default-test) @ {word} ---",
            f"[INFO] Tests run: {n % 50}, Failures: 0, Errors: 0, Skipped: 0, Time elapsed: 0.{n % 999} s"
            f" - in com.acme.{word}",
            f"  ✓ {word} › renders the {word} page ({n % 900}ms)",
            f"webpack 5.{n % 90}.0 compiled successfully in {n % 9000} ms",
            f"{stamp}Z   Compiling {word} v0.{n % 20}.{n % 9} (/home/runner/work/{word}/{word})",
            f"Step {n % 30}/40 : COPY --from=builder /app/{word} /srv/{word}",
            f"[{stamp}] INFO  {word}.worker: processed batch {n} in {n % 500} ms",
        ]
    )


def build_excerpts(rnd: random.Random, count: int, lines: list[str], min_kib: int, max_kib: int) -> list[str]:
    """Excerpts of min_kib..max_kib: noise, with corpus lines in the last tenth (none in one excerpt of ten)."""
    excerpts = []
    for n in range(count):
        size = rnd.randint(min_kib * 1024, max_kib * 1024)
        body: list[str] = []
        length = 0
        while length < size * 0.9:
            line = noise_line(rnd)
            body.append(line)
            length += len(line) + 1
        tail = [] if n % 10 == 9 else rnd.sample(lines, 1 + (n % 7 == 0))
        body.extend(tail)
        while length < size:
            line = noise_line(rnd)
            body.append(line)
            length += len(line) + 1
        excerpts.append("\n".join(body))
    return excerpts


def generated_specs(rnd: random.Random, count: int, first_id: int):
    """Rules like the ones teams add: a service's error, a tool's message, a job naming convention."""
    from escalation.choices import FailureType, RuleField, RuleStage
    from escalation.services.rule_engine import RuleSpec

    types = [t for t in FailureType.values if not t.startswith("vulnerability")]
    specs = []
    for n in range(count):
        word, other = rnd.sample(WORDS, 2)
        kind = n % 5
        if kind == 4:
            stage, field, pattern = RuleStage.NAME, RuleField.JOB, rf"^{word}[-_]{other}[-_](check|verify|gate){n}\b"
        elif kind == 3:
            stage, field, pattern = RuleStage.GENERIC, RuleField.LOG, rf"{word}Suite{n} > \w+ FAILED"
        elif kind == 2:
            stage, field, pattern = RuleStage.LOG, RuleField.LOG, rf"E{n:04d}: {word} handler (crashed|panicked)"
        elif kind == 1:
            stage, field = RuleStage.LOG, RuleField.LOG
            pattern = rf"{word}-service returned (5\d\d|timeout) for {other}"
        else:
            stage, field, pattern = RuleStage.LOG, RuleField.LOG, rf"\[{word}:{other}\] fatal: .*code {n}\b"
        failure_type = rnd.choice(types)
        specs.append(RuleSpec(first_id + n, f"generated-{n}", 1, stage, 1000 + n, field, "", pattern, failure_type))
    return specs


def python_re_loop(specs):
    """The obvious alternative: every rule a Python `re` pattern, tried in order until one matches."""
    compiled = [(spec, re.compile(spec.pattern, re.IGNORECASE | re.MULTILINE)) for spec in specs]

    def classify(job: str, log: str) -> str:
        for spec, regex in compiled:
            text = log if spec.field == "log" else job
            if text and regex.search(text):
                return spec.failure_type
        return "build_error"

    return classify


def measure_throughput(args, specs, excerpts) -> float:
    from escalation.services.classification import failure_classify
    from escalation.services.rule_engine import engine_for

    started = time.perf_counter()
    engine = engine_for(tuple(specs))
    compile_s = time.perf_counter() - started
    jobs = [f"ci-{n % 50}" for n in range(len(excerpts))]
    for job, log in zip(jobs[:200], excerpts[:200], strict=True):  # warm the DFA caches
        failure_classify(rules=engine, job=job, log_excerpt=log)
    cpu, wall = time.process_time(), time.perf_counter()
    pairs = list(zip(jobs, excerpts, strict=True))
    results = [failure_classify(rules=engine, job=job, log_excerpt=log) for job, log in pairs]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    total_mb = sum(len(log.encode()) for log in excerpts) / 1e6
    rate = len(excerpts) / wall
    matched = sum(1 for r in results if not r.is_fallback)
    print(
        f"rules: {len(engine)} ({len(specs) - args.generated} defaults + {args.generated} generated), "
        f"compiled into RE2 sets in {compile_s * 1000:.0f} ms"
    )
    print(
        f"excerpts: {len(excerpts)} of {args.min_kib}-{args.max_kib} KiB, {total_mb:.0f} MB; "
        f"{matched} decided by a rule, {len(excerpts) - matched} fallback"
    )
    print(
        f"RE2 sets, one core: {rate:,.0f} excerpts/s ({total_mb / wall:,.0f} MB/s), {wall:.2f} s wall, "
        f"{cpu:.2f} s CPU   [goal >= {RATE_GOAL:,}/s: {'met' if rate >= RATE_GOAL else 'MISSED'}]"
    )

    sample = list(zip(jobs, excerpts, strict=True))[: args.baseline_sample]
    loop = python_re_loop(engine.rules)
    started = time.perf_counter()
    loop_types = [loop(job, log) for job, log in sample]
    loop_s = time.perf_counter() - started
    same = sum(1 for t, r in zip(loop_types, results, strict=False) if t == r.failure_type)
    print(
        f"Python re, a loop over the same rules: {len(sample) / loop_s:,.0f} excerpts/s "
        f"(on {len(sample)} excerpts); same type as RE2 for {same} of {len(sample)}"
    )
    return rate


def store_failures(args, specs, corpus_lines) -> None:
    """Failures as ingestion leaves them, written in bulk: runs, jobs, events, failures, classified.

    The excerpts come from a pool of 2,000 (each classified once), reused with a line naming the
    failure appended, so that storing 100,000 takes minutes, not an hour; each row is its own text.
    """
    from django.db import connection
    from django.utils import timezone

    from escalation.choices import JobStatus
    from escalation.models import CIEvent, CIJob, CIRun, ClassificationRule, Failure, Repository
    from escalation.services.classification import failure_classify
    from escalation.services.config import rules_engine
    from escalation.services.signatures import error_signature
    from escalation.services.sources import source_create
    from portal.audit import Actor

    ClassificationRule.objects.bulk_create(
        ClassificationRule(
            name=s.name,
            stage=s.stage,
            position=s.position,
            field=s.field,
            pattern=s.pattern,
            failure_type=s.failure_type,
        )
        for s in specs
        if s.name.startswith("generated-")
    )
    engine = rules_engine()
    source, _ = source_create(name="bench", actor=Actor.command("bench"), now=timezone.now())
    repositories = [Repository.objects.create(name=f"acme/{word}") for word in WORDS]
    rnd = random.Random(11)
    started = time.perf_counter()
    pool = build_excerpts(rnd, min(2000, args.failures), corpus_lines, args.stored_min_kib, args.stored_max_kib)
    kinds = [failure_classify(rules=engine, job="job", log_excerpt=log) for log in pool]
    signatures = [error_signature(log) for log in pool]
    now = timezone.now()
    batch = 1000
    for offset in range(0, args.failures, batch):
        numbers = range(offset, min(offset + batch, args.failures))
        runs = CIRun.objects.bulk_create(
            CIRun(
                source=source,
                ci_system="bench",
                repository=repositories[n % len(repositories)],
                run_id=str(n),
                branch="main",
                commit_sha="9f1c2e7",
            )
            for n in numbers
        )
        jobs = CIJob.objects.bulk_create(
            CIJob(run=run, name=f"job-{n}", status=JobStatus.FAILURE) for n, run in zip(numbers, runs, strict=True)
        )
        events = CIEvent.objects.bulk_create(
            CIEvent(
                source=source,
                idempotency_key=f"bench-{n}",
                job=job,
                status=JobStatus.FAILURE,
                log_excerpt=f"{pool[n % len(pool)]}\nfailure {n} of the benchmark",
                event_fields={"source": "bench"},
                received_at=now,
            )
            for n, job in zip(numbers, jobs, strict=True)
        )
        failures = []
        for n, run, job, event in zip(numbers, runs, jobs, events, strict=True):
            kind = kinds[n % len(pool)]
            seen = now - timedelta(minutes=rnd.randint(1, 29 * 24 * 60))
            failures.append(
                Failure(
                    failure_type=kind.failure_type,
                    fingerprint=f"bench-{n}",
                    repository=run.repository,
                    branch="main",
                    job_name=job.name,
                    is_protected_branch=True,
                    status="resolved" if n % 5 else "open",
                    first_seen_at=seen,
                    last_seen_at=seen,
                    latest_run=run,
                    matrix_snapshot={},
                    classified_by=kind.classified_by,
                    classification_rule_id=kind.rule_id,
                    classification_rule_version=kind.rule_version,
                    classification_text=kind.matched_text,
                    classification_event=event,
                    tags=list(kind.tags),
                    signature=signatures[n % len(pool)],
                )
            )
        Failure.objects.bulk_create(failures)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('escalation_cievent'))")
        size = cursor.fetchone()[0]
    print(
        f"stored {args.failures:,} failures with {args.stored_min_kib}-{args.stored_max_kib} KiB excerpts "
        f"in {time.perf_counter() - started:.0f} s (events table {size})"
    )


def measure_previews(args) -> float:
    from django.utils import timezone

    from escalation.choices import RuleChangeKind
    from escalation.models import ClassificationRule
    from escalation.services.rule_changes import rule_change_preview, rule_change_propose, rule_state
    from portal.audit import Actor

    actor = Actor.command("bench")
    unit = ClassificationRule.objects.get(name="job-unit-test")
    auth = ClassificationRule.objects.get(name="auth-token-errors")
    cases = [
        (
            "edit a job-name rule (job-unit-test)",
            RuleChangeKind.UPDATE,
            unit,
            {**rule_state(unit), "pattern": unit.pattern.replace("vitest|", "vitest|mocha|")},
        ),
        (
            "edit a log rule (auth-token-errors)",
            RuleChangeKind.UPDATE,
            auth,
            {**rule_state(auth), "pattern": auth.pattern.replace("ExpiredSignatureError|", "")},
        ),
        (
            "new rule, infrastructure stage (every log read)",
            RuleChangeKind.CREATE,
            None,
            {
                "name": "bench-unhealthy",
                "stage": 10,
                "position": 105,
                "field": "log",
                "event_field": "",
                "pattern": r"(Killed process \d+|container \S+ is unhealthy)",
                "failure_type": "ci_runner",
                "tags": [],
                "is_enabled": True,
                "description": "",
            },
        ),
    ]
    slowest = 0.0
    for label, kind, rule, proposed in cases:
        change = rule_change_propose(kind=kind, rule=rule, proposed=proposed, actor=actor, now=timezone.now())
        started = time.perf_counter()
        change = rule_change_preview(change_id=change.pk, now=timezone.now())
        elapsed = time.perf_counter() - started
        slowest = max(slowest, elapsed)
        assert change.status == "previewed", change.error
        print(
            f"preview, {label}: {elapsed:.2f} s for {change.progress_total:,} candidates of {args.failures:,} "
            f"failures, {change.affected_count:,} would change   "
            f"[goal < {PREVIEW_GOAL_S:.0f} s: {'met' if elapsed < PREVIEW_GOAL_S else 'MISSED'}]"
        )
    return slowest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--excerpts", type=int, default=10_000, help="excerpts to classify (default 10000)")
    parser.add_argument("--generated", type=int, default=0, help="generated rules (default: up to 200 in all)")
    parser.add_argument("--min-kib", type=int, default=4)
    parser.add_argument("--max-kib", type=int, default=64)
    parser.add_argument("--baseline-sample", type=int, default=300, help="excerpts for the Python re loop")
    parser.add_argument("--failures", type=int, default=100_000, help="stored failures to preview (default 100000)")
    parser.add_argument("--stored-min-kib", type=int, default=4)
    parser.add_argument("--stored-max-kib", type=int, default=64)
    parser.add_argument("--skip-preview", action="store_true", help="only the throughput (needs no database data)")
    args = parser.parse_args()

    import django

    django.setup()
    import yaml
    from django.core.management import call_command

    from escalation.services.config import rules_engine

    call_command("migrate", verbosity=0)
    corpus = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
    lines = [entry["line"] for entries in corpus.values() for entry in entries]
    defaults = list(rules_engine().rules)
    args.generated = args.generated or 200 - len(defaults)
    specs = defaults + generated_specs(random.Random(7), args.generated, first_id=10_000)
    excerpts = build_excerpts(random.Random(3), args.excerpts, lines, args.min_kib, args.max_kib)

    rate = measure_throughput(args, specs, excerpts)
    slowest = 0.0
    if not args.skip_preview:
        store_failures(args, specs, lines)
        slowest = measure_previews(args)
    ok = rate >= RATE_GOAL and slowest < PREVIEW_GOAL_S
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
