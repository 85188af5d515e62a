"""Two OS processes sweep the same 1,000 due failures at once on PostgreSQL: every step happens once.

Each process is a separate Python interpreter with its own connection, started together; the claim
(skip-locked), the storm-group locks and the unique keys must keep them from taking a step twice or
sending a message twice, and neither may lose one.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection

from escalation.choices import EscalationStep as S
from escalation.models import Escalation, Failure, FailureGroup, Notification, NotificationChannel, Team, TicketTracker
from escalation.services.escalation import sla_sweep
from tests.factories import report_failure

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.concurrency]

ROUNDS = 5
FAILURES = 1000
OPENED = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
NOW = OPENED + timedelta(minutes=45)  # ci_runner: opened, ticket, triage reminder, at risk, level 1 all due
STEPS = {S.OPENED, S.TICKET, S.TRIAGE_REMINDER, S.AT_RISK, S.LEVEL_1}

SWEEP = """
import json, sys, django
django.setup()
from datetime import datetime
from escalation.services.escalation import sla_sweep
result = sla_sweep(now=datetime.fromisoformat(sys.argv[1]), batch_size=int(sys.argv[2]))
print(json.dumps({"claimed": result.claimed, "steps": result.steps}))
"""


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def due_failures() -> list[int]:
    """1,000 open ci_runner failures due since OPENED, in 20-member storms of one signature and lone ones."""
    for team in Team.objects.all():
        NotificationChannel.objects.create(team=team, kind="slack", name=f"#{team.name}", url="http://127.0.0.1:9/")
        TicketTracker.objects.create(team=team, kind="github", base_url="http://127.0.0.1:9", project="a/b", token="t")
    from django.test import Client

    from escalation.services.sources import source_create
    from portal.audit import Actor

    _, token = source_create(name="ci", actor=Actor.task("test"), now=OPENED)
    stamp = OPENED.isoformat()
    template = report_failure(
        Client(headers={"authorization": f"Bearer {token}"}), type="ci_runner", started_at=stamp, finished_at=stamp
    )
    rows = []
    for n in range(1, FAILURES):
        row = Failure.objects.get(pk=template.pk)
        row.pk, row.job_name, row.fingerprint = None, f"job-{n}", f"{n:064d}"
        row.signature = f"runner lost shard {n // 20}" if n < FAILURES // 2 else f"lone error {n}"
        rows.append(row)
    Failure.objects.bulk_create(rows)
    return list(Failure.objects.values_list("pk", flat=True))


def reset() -> None:
    Escalation.objects.all().delete()
    Notification.objects.all().delete()
    Failure.objects.update(next_step_at=OPENED, breached_at=None, escalation_level=0, group=None)
    FailureGroup.objects.all().delete()


def sweep_together() -> list[dict]:
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "portal.settings"}
    processes = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", SWEEP, NOW.isoformat(), "50"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_processes_take_each_step_once_and_send_each_message_once():
    ids = due_failures()
    assert len(ids) == FAILURES
    teams_per_step = None
    for _ in range(ROUNDS):
        reset()
        results = sweep_together()
        assert sum(r["claimed"] for r in results) == FAILURES
        teams_per_step = assert_each_step_once(ids, teams_per_step)
    # At risk and the breach came due in one sweep: the step is recorded, level 1 does the telling.
    assert teams_per_step == {S.OPENED: 2, S.TICKET: 1, S.TRIAGE_REMINDER: 1, S.AT_RISK: 0, S.LEVEL_1: 2}


def test_one_sweep_with_threads_takes_each_step_once_and_closes_their_connections():
    """A sweep whose first batch comes back full sweeps the rest in threads, each its own share."""
    ids = due_failures()
    seen = [backends()]
    for workers in (1, 3, 3):
        reset()
        result = sla_sweep(now=NOW, batch_size=40, workers=workers)
        assert (result.claimed, result.steps) == (FAILURES, FAILURES * len(STEPS))
        counts = assert_each_step_once(ids, None)
        assert counts == {S.OPENED: 2, S.TICKET: 1, S.TRIAGE_REMINDER: 1, S.AT_RISK: 0, S.LEVEL_1: 2}
        seen.append(backends())
    # The threads' connections are closed or back in the pool: a second threaded sweep opens none more.
    assert seen[3] == seen[2] <= seen[0] + 3


def backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def assert_each_step_once(ids: list[int], teams_per_step: dict | None) -> dict:
    """Every failure took every step once and is in one message per step and target; storms share a group.
    Returns the number of targets told per step, which must be teams_per_step when given."""
    steps = Counter(Escalation.objects.values_list("failure_id", "step"))
    assert len(steps) == FAILURES * len(STEPS) and set(steps.values()) == {1}
    assert {step for _, step in steps} == STEPS
    # Each failure is in exactly one message per step and target (its group's or its own).
    through = Notification.failures.through.objects.values_list(
        "failure_id", "notification__step", "notification__channel_id", "notification__tracker_id"
    )
    per_target = Counter(through)
    assert set(per_target.values()) == {1}
    targets = Counter((failure, step) for failure, step, _, _ in per_target)
    counts = {step: targets[(ids[0], step)] for step in STEPS}
    assert counts == (teams_per_step or counts)
    wrong = [(f, s, targets[(f, s)]) for f in ids for s in STEPS if targets[(f, s)] != counts[s]]
    assert not wrong, (counts, wrong[:10], len(wrong))
    # Storms: 20 failures with one signature share one group and so one message per step and target.
    by_signature: dict[str, set] = {}
    for signature, group in Failure.objects.values_list("signature", "group_id"):
        by_signature.setdefault(signature, set()).add(group)
    assert len(by_signature) == 26 + FAILURES // 2  # 25 shards + the template's + the lone ones
    for signature, groups in by_signature.items():
        if signature.startswith("runner lost shard"):
            assert len(groups) == 1 and None not in groups, signature  # one storm, one group
        else:
            assert groups == {None}, signature  # alone: no storm
    return counts
