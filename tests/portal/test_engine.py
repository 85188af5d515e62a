"""The engine's schedules (declared in code, written after migrate) and its health (/readyz, /readyz/engine)."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from escalation import tasks
from escalation.models import EngineBeat
from escalation.services import engine
from escalation.services import escalation as ladder
from escalation.services.escalation import SweepResult

pytestmark = pytest.mark.django_db

EXPECTED = {  # name: (task, every so many minutes)
    "sla-sweep": ("escalation.tasks.sla_sweep", 1),
    "notifications-deliver": ("escalation.tasks.notifications_deliver", 1),
    "engine-heartbeat": ("escalation.tasks.engine_heartbeat", 1),
    "digests": ("escalation.tasks.digests_send_due", 5),
    "detect-patterns": ("escalation.tasks.detect_patterns", 15),
}


def schedules() -> dict[str, list[tuple[str, str, int | None]]]:
    found: dict[str, list] = {}
    for s in Schedule.objects.filter(name__in=EXPECTED).order_by("id"):
        found.setdefault(s.name, []).append((s.func, s.schedule_type, s.minutes))
    return found


def beat(name: str, age: timedelta, detail: str = "") -> None:
    EngineBeat.objects.update_or_create(name=name, defaults={"at": timezone.now() - age, "detail": detail})


@pytest.fixture
def fake_sweep(monkeypatch):
    """The ladder's sweep replaced, for tests of the bookkeeping around it."""
    calls = []

    def sla_sweep(*, now, batch_size=2000):
        calls.append(now)
        return SweepResult(claimed=3, steps=2, notifications=4)

    monkeypatch.setattr(ladder, "sla_sweep", sla_sweep)
    return calls


# --- schedules ---


def test_the_schedules_exist_once_after_migrate():
    assert schedules() == {name: [(func, Schedule.MINUTES, minutes)] for name, (func, minutes) in EXPECTED.items()}
    assert all(callable(getattr(tasks, func.rpartition(".")[2])) for func, _ in EXPECTED.values())


def test_migrating_again_duplicates_no_schedule_and_restores_an_edited_row():
    Schedule.objects.filter(name="sla-sweep").update(minutes=7, func="somewhere.else")
    Schedule.objects.create(name="engine-heartbeat", func="escalation.tasks.engine_heartbeat", schedule_type="I")
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    assert schedules() == {name: [(func, Schedule.MINUTES, minutes)] for name, (func, minutes) in EXPECTED.items()}


def test_a_changed_interval_in_code_updates_the_row(monkeypatch):
    next_run = Schedule.objects.get(name="sla-sweep").next_run
    changed = tuple(
        engine.ScheduleSpec(spec.name, spec.func, spec.schedule_type, 5) if spec.name == "sla-sweep" else spec
        for spec in engine.SCHEDULES
    )
    monkeypatch.setattr(engine, "SCHEDULES", changed)
    assert engine.schedules_ensure() == len(EXPECTED)
    assert engine.schedules_ensure() == len(EXPECTED)
    assert schedules()["sla-sweep"] == [("escalation.tasks.sla_sweep", Schedule.MINUTES, 5)]
    assert Schedule.objects.get(name="sla-sweep").next_run == next_run  # the running cadence is kept
    assert Schedule.objects.filter(name__in=EXPECTED).count() == len(EXPECTED)


def test_a_new_line_in_schedules_is_a_new_schedule(monkeypatch):
    digest = engine.ScheduleSpec("standup-digest", "escalation.tasks.standup_digest", Schedule.DAILY)
    monkeypatch.setattr(engine, "SCHEDULES", (*engine.SCHEDULES, digest))
    call_command("migrate", verbosity=0)
    assert Schedule.objects.filter(name="standup-digest").values_list("func", "schedule_type").get() == (
        "escalation.tasks.standup_digest",
        Schedule.DAILY,
    )
    assert Schedule.objects.filter(name__in=EXPECTED).count() == len(EXPECTED)


# --- beats and the engine's state ---


def test_engine_beat_keeps_one_row_per_name():
    first = timezone.now() - timedelta(minutes=1)
    engine.engine_beat("worker", first, "one")
    engine.engine_beat("worker", first + timedelta(seconds=30), "x" * 500)
    row = EngineBeat.objects.get(name="worker")
    assert (row.at, row.detail) == (first + timedelta(seconds=30), "x" * 200)
    assert EngineBeat.objects.count() == 1


def test_engine_state_gives_times_ages_and_stale_flags():
    now = timezone.now()
    engine.engine_beat("worker", now - timedelta(seconds=30))
    engine.engine_beat("sla_sweep", now - timedelta(seconds=301), "0 failures swept")
    state = engine.engine_state(now)
    assert state["worker"] == {
        "at": (now - timedelta(seconds=30)).isoformat(),
        "age_seconds": 30,
        "detail": "",
        "stale": False,
        "stale_after_seconds": 120,
    }
    assert (state["sla_sweep"]["age_seconds"], state["sla_sweep"]["stale"]) == (301, True)
    assert (state["status"], state["stale"]) == ("stale", True)


def test_the_thresholds_come_from_settings(settings):
    settings.PORTAL_ENGINE_HEARTBEAT_STALE_SECONDS = 10
    settings.PORTAL_ENGINE_SWEEP_STALE_SECONDS = 1000
    now = timezone.now()
    engine.engine_beat("worker", now - timedelta(seconds=11))
    engine.engine_beat("sla_sweep", now - timedelta(seconds=900))
    state = engine.engine_state(now)
    assert (state["worker"]["stale"], state["sla_sweep"]["stale"]) == (True, False)


# --- /readyz and /readyz/engine ---


def test_readyz_shows_the_engine_and_stays_200_when_it_is_missing():
    response = Client().get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["engine"]["worker"]["at"] is None
    assert body["engine"]["sla_sweep"]["at"] is None
    assert body["engine"]["stale"] is True


def test_readyz_stays_200_when_the_engine_is_stale():
    beat("worker", timedelta(hours=1))
    beat("sla_sweep", timedelta(hours=2), "1 failures swept")
    response = Client().get("/readyz")
    assert response.status_code == 200
    engine_body = response.json()["engine"]
    assert (engine_body["worker"]["stale"], engine_body["sla_sweep"]["stale"]) == (True, True)
    assert engine_body["sla_sweep"]["age_seconds"] >= 7200
    assert engine_body["sla_sweep"]["detail"] == "1 failures swept"


def test_readyz_shows_a_fresh_engine():
    beat("worker", timedelta(seconds=5))
    beat("sla_sweep", timedelta(seconds=50))
    body = Client().get("/readyz").json()
    assert body["engine"]["status"] == "ok"
    assert 50 <= body["engine"]["sla_sweep"]["age_seconds"] < 60


def test_readyz_engine_is_503_when_both_beats_are_missing():
    response = Client().get("/readyz/engine")
    assert response.status_code == 503
    assert response.json()["status"] == "stale"


@pytest.mark.parametrize(
    ("worker_age", "sweep_age", "status"),
    [
        (timedelta(seconds=10), timedelta(seconds=50), 200),
        (timedelta(seconds=110), timedelta(seconds=290), 200),
        (timedelta(minutes=3), timedelta(seconds=50), 503),  # heartbeat older than 2 minutes
        (timedelta(seconds=10), timedelta(minutes=6), 503),  # sweep older than 5 minutes
        (timedelta(minutes=3), timedelta(minutes=6), 503),
        (None, timedelta(seconds=50), 503),  # no worker ever beat
        (timedelta(seconds=10), None, 503),  # no sweep ever ran
    ],
)
def test_readyz_engine_answers_by_the_ages_of_heartbeat_and_sweep(worker_age, sweep_age, status):
    if worker_age is not None:
        beat("worker", worker_age)
    if sweep_age is not None:
        beat("sla_sweep", sweep_age)
    response = Client().get(reverse("readyz-engine"))
    assert response.status_code == status, response.json()
    body = response.json()
    assert body["status"] == ("ok" if status == 200 else "stale")
    assert set(body) >= {"worker", "sla_sweep", "stale"}


# --- the task, the command, the heartbeat ---


def test_the_sla_sweep_task_sweeps_and_records_the_beat(fake_sweep):
    summary = tasks.sla_sweep()
    swept = SweepResult(claimed=3, steps=2, notifications=4).summary()
    assert summary.startswith(f"{swept}; 0 notifications claimed")  # then delivers what the sweep queued
    row = EngineBeat.objects.get(name="sla_sweep")
    assert (row.at, row.detail) == (fake_sweep[0], swept)
    assert Client().get("/readyz").json()["engine"]["sla_sweep"]["stale"] is False


def test_the_sla_sweep_command_prints_the_summary_and_records_the_beat(fake_sweep):
    out = StringIO()
    call_command("sla_sweep", stdout=out)
    summary = SweepResult(claimed=3, steps=2, notifications=4).summary()
    assert out.getvalue().strip() == summary
    assert len(fake_sweep) == 1
    row = EngineBeat.objects.get(name="sla_sweep")
    assert (row.at, row.detail) == (fake_sweep[0], summary)
    assert timezone.now() - row.at < timedelta(seconds=10)


def test_a_sweep_that_fails_records_no_beat(monkeypatch):
    def broken(*, now, batch_size=2000):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ladder, "sla_sweep", broken)
    with pytest.raises(RuntimeError):
        tasks.sla_sweep()
    assert not EngineBeat.objects.filter(name="sla_sweep").exists()


def test_the_sla_sweep_command_runs_the_real_sweep():
    """Calls escalation.services.escalation.sla_sweep itself; it passes once the ladder's sweep is written."""
    out = StringIO()
    call_command("sla_sweep", stdout=out)
    row = EngineBeat.objects.get(name="sla_sweep")
    assert "failures swept" in out.getvalue()
    assert row.detail == out.getvalue().strip()


def test_the_engine_heartbeat_task_records_the_worker_beat():
    before = timezone.now()
    summary = tasks.engine_heartbeat()
    row = EngineBeat.objects.get(name="worker")
    assert before <= row.at <= timezone.now()
    assert summary.startswith("worker heartbeat at ")
    assert "pid " in row.detail
    state = Client().get("/readyz/engine").json()
    assert (state["worker"]["stale"], state["sla_sweep"]["stale"]) == (False, True)


def test_the_admin_shows_the_heartbeat_and_the_sweep_with_their_ages(admin_client):
    beat("worker", timedelta(seconds=20))
    beat("sla_sweep", timedelta(minutes=10), "0 failures swept")
    page = admin_client.get(reverse("admin:escalation_enginebeat_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "worker" in text and "sla_sweep" in text
    assert "10 min" in text and "0 failures swept" in text
    assert 'alt="True"' in text and 'alt="False"' in text  # the sweep is stale, the worker is not


def test_the_sweep_loop_sweeps_every_interval_until_its_time_is_up(fake_sweep):
    elapsed, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        elapsed[0] += seconds

    summary = engine.engine_sweep_loop(
        seconds=20, interval=5, clock=timezone.now, sleep=sleep, timer=lambda: elapsed[0]
    )
    assert len(fake_sweep) == 5 and slept == [5, 5, 5, 5]  # at 0, 5, 10, 15 and 20 s: the next would pass 20 s
    assert summary.count("3 failures swept") == 3  # the last three sweeps' summaries
