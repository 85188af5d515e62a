"""SLA sweep benchmark: one `sla_sweep` over 10,000 due failures, with 10,000 and with 100,000 open.

Run it with `make bench-sla-sweep` (or `scripts/with-postgres.sh .venv/bin/python bench/sla_sweep.py`),
which gives it a throwaway PostgreSQL through DATABASE_URL. It migrates that database, opens one
failure through the ingestion service (the template row: matrix snapshot, owner and secondary team,
classification), gives every team a Slack channel (a dummy URL; nothing is sent) and bulk-inserts
copies of the template with distinct fingerprints, job names, repositories and runs:

- the due failures (unit_test, opened 4 h to 4 h 50 min before the sweep's `now`, triaged, at-risk
  and ticket steps already taken): exactly one ladder step due each, level 1 (the SLA breach); most
  have a signature of their own, 15 % share one with four others opened within minutes (storm groups
  of 5, which the sweep forms and tells once);
- the others, open but not due: opened in the last 2 h 50 min, their next step (triage reminder or
  at risk) still ahead; plus a few open ci_runner failures on runs of their own, so that the clock
  pause check has causes to look at.

It times one `sla_sweep(now=...)` (wall and CPU) and counts its SQL statements at 10,050 open (the
10,000 due and the 50 ci_runner ones) and, after adding 89,950 failures that are not due, at 100,000
open (the same 10,000 due); between measurements it puts the due failures back as they were. Each
measured sweep starts with the routing config cache cleared, as a sweep a minute after the last one
does. It prints a table, the statements by kind, the claim query's plan (EXPLAIN ANALYZE) at each
size, and whether the goals hold: a sweep under 2 s at 100,000 open, and the same number of
statements at both sizes. `--profile` also prints a cProfile of one more sweep at the largest size.
"""

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import random
import re
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")

WALL_GOAL_S = 2.0
INFRA_OPEN = 50  # open ci_runner failures: causes the clock-pause check looks at
STORM_SHARE, STORM_SIZE = 0.15, 5
STORM_START = STORM_SHARE / (STORM_SIZE - STORM_SHARE * (STORM_SIZE - 1))  # a fresh draw starts a storm
WORDS = [
    "cart", "billing", "ledger", "invoice", "search", "catalog", "payments", "shipping", "orders", "profile",
    "inventory", "pricing", "reports", "gateway", "session", "notify", "media", "export", "import", "audit",
]  # fmt: skip
ERRORS = [
    "assertionerror: assert <n> == <n> in test_{a}_{b}",
    "expected <str> to equal <str> ({a} {b} renders totals)",
    "{a}service.{b}handler raised keyerror: <str>",
    "timeouterror: {a} client did not answer {b} within <n>s",
    "typeerror: cannot read properties of undefined (reading <str>) at {a}/{b}.ts",
    "error: relation <str> does not exist ({a}_{b} migration)",
    "nullpointerexception at com.acme.{a}.{b}service.load(<str>:<n>)",
]


class Counting:
    """A connection execute_wrapper: counts statements and their time by kind (verb and first table)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.by_kind: Counter = Counter()
        self.seconds: defaultdict = defaultdict(float)

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            kind = statement_kind(sql)
            with self.lock:  # the sweep's threads share it
                self.count += 1
                self.by_kind[kind] += 1
                self.seconds[kind] += elapsed


def statement_kind(sql: str) -> str:
    text = " ".join(sql.split())
    verb = text.split(" ", 1)[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?([a-z_]+)"?', text, re.IGNORECASE)
    lock = " FOR UPDATE" if "FOR UPDATE" in text.upper() else ""
    return f"{verb} {table[1] if table else '?'}{lock}"


def signature_for(n: int) -> str:
    """A realistic normalised error line, distinct for each n (numbers are normalised away, so words differ)."""
    digits = []
    rest = n
    for _ in range(4):
        rest, d = divmod(rest, len(WORDS))
        digits.append(WORDS[d])
    template = ERRORS[rest % len(ERRORS)]
    return template.format(a=f"{digits[0]}_{digits[1]}", b=f"{digits[2]}_{digits[3]}")[:255]


def setup(args, now: datetime) -> dict:
    """Migrate, open the template failure, create the teams' channels, repositories and runs."""
    from django.core.management import call_command
    from django.db import connection

    from escalation.choices import ChannelKind
    from escalation.models import CIRun, Failure, NotificationChannel, Repository, Team
    from escalation.services.ingestion import EventInput, event_ingest
    from escalation.services.sources import source_create
    from portal.audit import Actor

    call_command("migrate", verbosity=0)
    source, _ = source_create(name="bench-sla", actor=Actor.command("bench"), now=now)
    ingested = event_ingest(
        ingest_source=source,
        data=EventInput(
            source="github-actions",
            repository="acme/shop",
            branch="main",
            commit="9f1c2e7",
            commit_author="dev@example.com",
            run_id="1001",
            job="unit-tests",
            status="failure",
            type="unit_test",
            log_excerpt="FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4",
        ),
        now=now,
    )
    template = Failure.objects.get(pk=ingested.failure.pk)
    assert template.is_protected_branch and template.sla_due_at, "the template failure must escalate"
    NotificationChannel.objects.bulk_create(
        NotificationChannel(
            team=team,
            kind=ChannelKind.SLACK,
            name=f"#{team.name.lower().replace(' ', '-')}-alerts",
            url=f"https://hooks.slack.invalid/services/T000/B{team.pk:03d}/bench",
        )
        for team in Team.objects.all()
    )
    repositories = [template.repository] + [
        Repository.objects.get_or_create(name=f"acme/{word}", defaults={"default_branch": "main"})[0]
        for word in WORDS[1:]
    ]
    runs_needed = (args.open + INFRA_OPEN) // 10 + INFRA_OPEN + 1
    runs = CIRun.objects.bulk_create(
        (
            CIRun(
                source=source,
                ci_system="github-actions",
                repository=repositories[n % len(repositories)],
                run_id=str(50_000 + n),
                branch="main",
                commit_sha="9f1c2e7",
            )
            for n in range(runs_needed)
        ),
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM escalation_team")
        teams = cursor.fetchone()[0]
    tier = template.matrix_snapshot["tier"]
    print(f"template failure #{template.pk}: {template.failure_type}, snapshot tier {tier}, "
          f"owner team {template.owner_team_id}, secondary team {template.secondary_team_id}; "
          f"{teams} teams with a Slack channel each")  # fmt: skip
    return {"template": template, "repositories": repositories, "runs": runs, "next_run": 0, "serial": 0}


def copies(state: dict, count: int, *, due: bool, now: datetime, rnd: random.Random):
    """`count` failures copied from the template; due ones have level 1 due at `now`, the others nothing."""
    from escalation.models import Failure
    from escalation.services import escalation as ladder

    template = state["template"]
    skip = {"id", "fingerprint", "job_name", "repository", "latest_run", "signature", "group"}
    base = {f.attname: getattr(template, f.attname) for f in Failure._meta.concrete_fields if f.name not in skip}
    repositories, runs = state["repositories"], state["runs"]
    rows = []
    storm_left, storm_signature, storm_seen = 0, "", now
    for _ in range(count):
        n = state["serial"]
        state["serial"] += 1
        run = runs[state["next_run"] // 10 % (len(runs) - INFRA_OPEN - 1)]
        state["next_run"] += 1
        failure = Failure(**base)
        failure.fingerprint = hashlib.sha256(f"bench-sla-{n}".encode()).hexdigest()
        failure.job_name = f"{WORDS[n % len(WORDS)]}-tests-{n}"
        failure.repository_id = repositories[n % len(repositories)].pk
        failure.latest_run_id = run.pk
        failure.classification_event_id = None
        if due:
            if storm_left:  # the rest of a storm: one signature, opened within minutes of each other
                storm_left -= 1
                failure.signature = storm_signature
                seen = storm_seen + timedelta(seconds=rnd.randint(0, 180))
            else:
                failure.signature = signature_for(n)
                seen = now - timedelta(hours=4, seconds=rnd.randint(300, 50 * 60))
                if rnd.random() < STORM_START:
                    storm_left, storm_signature, storm_seen = STORM_SIZE - 1, failure.signature, seen
            failure.first_seen_at = failure.last_seen_at = seen
            failure.triage_due_at = seen + timedelta(minutes=15)
            failure.triaged_at = seen + timedelta(minutes=rnd.randint(2, 14))
            failure.triage_verdict = "confirmed"
            failure.at_risk_at = seen + timedelta(hours=3)
            failure.sla_due_at = failure.ticket_due_at = seen + timedelta(hours=4)
            failure.ticket_key = f"OPS-{n}"
            failure.next_step_at = failure.sla_due_at
        else:
            failure.signature = signature_for(n) if rnd.random() < 0.9 else signature_for(rnd.randint(0, 999))
            seen = now - timedelta(seconds=rnd.randint(60, int(2.83 * 3600)))
            failure.first_seen_at = failure.last_seen_at = seen
            failure.triage_due_at = seen + timedelta(minutes=15)
            failure.triaged_at = seen + timedelta(minutes=5) if now - seen >= timedelta(minutes=15) else None
            failure.at_risk_at = seen + timedelta(hours=3)
            failure.sla_due_at = failure.ticket_due_at = seen + timedelta(hours=4)
            failure.next_step_at = ladder.next_step_at(failure, team=None, done=set())
            assert failure.next_step_at > now, (failure.next_step_at, now)
        rows.append(failure)
    return rows


def insert(rows) -> list:
    from escalation.models import Failure

    created = []
    for offset in range(0, len(rows), 5000):
        created += Failure.objects.bulk_create(rows[offset : offset + 5000])
    return created


def load_due(state: dict, count: int, now: datetime, rnd: random.Random) -> list[int]:
    """The due failures, with the at-risk and ticket steps they have already had."""
    from escalation.choices import EscalationStep
    from escalation.models import Escalation

    failures = insert(copies(state, count, due=True, now=now, rnd=rnd))
    Escalation.objects.bulk_create(
        (
            Escalation(failure=f, step=step, due_at=due_at, at=due_at, recipients=[{"note": "bench: taken earlier"}])
            for f in failures
            for step, due_at in ((EscalationStep.AT_RISK, f.at_risk_at), (EscalationStep.TICKET, f.ticket_due_at))
        ),
        batch_size=5000,
    )
    return [f.pk for f in failures]


def load_not_due(state: dict, count: int, now: datetime, rnd: random.Random) -> None:
    """Open failures with no step due."""
    insert(copies(state, count, due=False, now=now, rnd=rnd))


def load_infra(state: dict, now: datetime, rnd: random.Random) -> None:
    """A few open ci_runner failures on runs of their own: causes the clock-pause check looks at, not due."""
    from escalation.services.config import routing_config

    infra = copies(state, INFRA_OPEN, due=False, now=now, rnd=rnd)
    snapshot = routing_config().snapshot("ci_runner")
    own_runs = state["runs"][-INFRA_OPEN - 1 : -1]
    for failure, run in zip(infra, own_runs, strict=True):
        failure.failure_type, failure.matrix_snapshot, failure.latest_run_id = "ci_runner", snapshot, run.pk
        failure.fingerprint = hashlib.sha256(f"infra-{failure.fingerprint}".encode()).hexdigest()
        failure.next_step_at = now + timedelta(hours=1)
    insert(infra)


def reset(due_ids: list[int]) -> None:
    """Undo a sweep: its level-1 rows, outbox rows, timeline entries and groups; the due failures as before."""
    from django.db import connection

    from escalation.models import Escalation, FailureGroup, Notification, TimelineEntry

    through = Notification.failures.through._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {through}")  # noqa: S608 - table names from _meta
        cursor.execute(f"DELETE FROM {Notification._meta.db_table}")  # noqa: S608
        cursor.execute(f"DELETE FROM {Escalation._meta.db_table} WHERE step = 'level_1'")  # noqa: S608
        cursor.execute(f"DELETE FROM {TimelineEntry._meta.db_table} WHERE kind = 'escalated'")  # noqa: S608
        cursor.execute(
            "UPDATE escalation_failure SET next_step_at = sla_due_at, breached_at = NULL, escalation_level = 0,"
            " group_id = NULL WHERE id = ANY(%s)",
            [due_ids],
        )
        cursor.execute(f"DELETE FROM {FailureGroup._meta.db_table}")  # noqa: S608
        for table in ("escalation_failure", "escalation_escalation", Notification._meta.db_table, through,
                      TimelineEntry._meta.db_table, FailureGroup._meta.db_table):  # fmt: skip
            cursor.execute(f"VACUUM ANALYZE {table}")


def open_count() -> int:
    from escalation.models import Failure
    from escalation.models.failures import OPEN_Q

    return Failure.objects.filter(OPEN_Q).count()


def sweep_once(now: datetime, batch_size: int, workers: int | None = None, profile: bool = False) -> dict:
    from django.db import connection
    from django.db.backends.signals import connection_created

    from escalation.services import escalation as ladder
    from escalation.services.config import config_changed

    config_changed()  # as in the worker, a minute after the last sweep: the routing config is loaded again
    counting = Counting()
    profiler = cProfile.Profile() if profile else None

    def count_thread(sender, connection, **kwargs):  # the sweep's worker threads open connections of their own
        if counting not in connection.execute_wrappers:
            connection.execute_wrappers.append(counting)

    connection_created.connect(count_thread)
    try:
        with connection.execute_wrapper(counting):
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            result = ladder.sla_sweep(now=now, batch_size=batch_size, workers=workers)
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        connection_created.disconnect(count_thread)
    db_seconds = sum(counting.seconds.values())
    return {"result": result, "wall": wall, "cpu": cpu, "db": db_seconds, "counting": counting, "profiler": profiler}


def claim_plan(now: datetime, batch_size: int) -> str:
    """EXPLAIN ANALYZE of the sweep's claim query, as _sweep_batch builds it (rolled back: the rows stay unlocked)."""
    from django.db import connection, transaction

    from escalation.models import Failure
    from escalation.models.failures import OPEN_Q

    queryset = (
        Failure.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(OPEN_Q, next_step_at__lte=now)
        .select_related("repository", "group")
        .order_by("next_step_at", "id")[:batch_size]
    )
    with transaction.atomic(), connection.cursor() as cursor:
        sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return plan


def measure(label: str, args, now: datetime, due_ids: list[int]) -> list[dict]:
    """The sweep at this size with each worker count, alternating (this machine's speed drifts between runs)."""
    from escalation.models import Escalation, Notification

    reset(due_ids)
    plan = claim_plan(now, args.batch_size)
    runs: dict[int, list[dict]] = {workers: [] for workers in args.workers}
    for _ in range(args.repeat):
        for workers in args.workers:
            reset(due_ids)
            runs[workers].append(sweep_once(now, args.batch_size, workers))
    notifications = Notification.objects.count()
    level_1 = Escalation.objects.filter(step="level_1").count()
    return [{"label": label, "open": open_count(), "workers": workers, "runs": runs[workers], "plan": plan,
             "notifications": notifications, "level_1": level_1} for workers in args.workers]  # fmt: skip


def report(args, rows: list[dict]) -> bool:
    print()
    print(f"SLA sweep benchmark: batch_size {args.batch_size}, {args.repeat} sweep(s) per size, "
          f"CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    header = (f"  {'open':>8} {'due':>6} {'threads':>7} | {'wall s':>7} {'median':>7} {'CPU s':>6} {'SQL s':>6} "
              f"| {'queries':>7} | {'claimed':>7} {'steps':>6} {'outbox':>6} {'level-1 rows':>12}")  # fmt: skip
    print(header)
    print("  " + "-" * (len(header) - 2))
    for row in rows:
        best = min(row["runs"], key=lambda r: r["wall"])
        median = statistics.median(r["wall"] for r in row["runs"])
        queries = sorted({r["counting"].count for r in row["runs"]})
        result = best["result"]
        print(
            f"  {row['open']:>8,} {args.due:>6,} {row['workers']:>7} | {best['wall']:>7.2f} {median:>7.2f} "
            f"{best['cpu']:>6.2f} {best['db']:>6.2f} | {'/'.join(map(str, queries)):>7} | {result.claimed:>7} "
            f"{result.steps:>6} {result.notifications:>6} {row['level_1']:>12}"
        )
    print("  (threads: sla_sweep's workers; wall: the fastest sweep; CPU: this process, all threads; SQL: time spent")
    print("  in the database calls, client side, summed over the threads)")
    print()
    goal_rows = [row for row in rows if row["workers"] == args.workers[-1]]
    largest = goal_rows[-1]
    best = min(largest["runs"], key=lambda r: r["wall"])
    print(f"  statements of one sweep at {largest['open']:,} open, by kind (count, seconds):")
    counting = best["counting"]
    for kind, seconds in sorted(counting.seconds.items(), key=lambda kv: -kv[1]):
        print(f"    {counting.by_kind[kind]:>5} {seconds:>7.3f}  {kind}")
    for row in goal_rows:
        print()
        print(f"  claim query plan at {row['open']:,} open (EXPLAIN ANALYZE, first batch):")
        print("\n".join("    " + line for line in row["plan"].splitlines()))
    print()
    walls = {row["open"]: min(r["wall"] for r in row["runs"]) for row in goal_rows}
    counts = {c for row in goal_rows for c in (r["counting"].count for r in row["runs"])}
    fast = walls[max(walls)] < WALL_GOAL_S
    flat = len(counts) == 1
    print(f"  goal: one sweep ({args.workers[-1]} threads) under {WALL_GOAL_S:.0f} s at {max(walls):,} open: "
          f"{walls[max(walls)]:.2f} s, "
          f"{'met' if fast else 'NOT MET'}")  # fmt: skip
    print(f"  goal: the same number of statements at every size: {sorted(counts)}, {'met' if flat else 'NOT MET'}")
    return fast and flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=int, default=100_000, help="open failures at the larger size (default 100000)")
    parser.add_argument("--due", type=int, default=10_000, help="failures with level 1 due (default 10000)")
    parser.add_argument("--batch-size", type=int, default=2000, help="sla_sweep's batch_size (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="sweeps measured per size (default 3)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="sla_sweep's threads (default PORTAL_SWEEP_WORKERS); 1 is measured too",
    )
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of a sweep at the largest size")
    parser.add_argument("--profile-sort", default="cumulative", help="pstats order, e.g. tottime")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    if args.open < args.due:
        parser.error("--open must be at least --due")

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from escalation.models import Failure

    args.workers = sorted({1, args.workers or settings.PORTAL_SWEEP_WORKERS})
    if connection.vendor != "postgresql":
        print("bench/sla_sweep.py needs PostgreSQL; run it with `make bench-sla-sweep`", file=sys.stderr)
        return 2
    rnd = random.Random(args.seed)
    now = timezone.now().replace(microsecond=0)
    started = time.perf_counter()
    state = setup(args, now - timedelta(hours=5))
    due_ids = load_due(state, args.due, now, rnd)
    load_infra(state, now, rnd)
    # The template (opened 5 h before `now`) would be due as well: close it, so the due set is exactly --due.
    Failure.objects.filter(pk=state["template"].pk).update(status="resolved", resolution="fixed", resolved_at=now)
    print(f"loaded {args.due:,} due failures in {time.perf_counter() - started:.0f} s")
    rows = measure("due only", args, now, due_ids)
    started = time.perf_counter()
    not_due = args.open - args.due - INFRA_OPEN
    load_not_due(state, not_due, now, rnd)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"loaded {not_due:,} open failures that are not due in {time.perf_counter() - started:.0f} s")
    rows += measure("with not due", args, now, due_ids)
    ok = report(args, rows)
    if args.profile:
        reset(due_ids)
        profiled = sweep_once(now, args.batch_size, workers=1, profile=True)  # cProfile sees one thread
        out = io.StringIO()
        pstats.Stats(profiled["profiler"], stream=out).sort_stats(args.profile_sort).print_stats(30)
        print(f"\n  cProfile of one more sweep at {rows[-1]['open']:,} open ({profiled['wall']:.2f} s wall):")
        print(out.getvalue())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
