"""Delivering the outbox: at least once, with retries and backoff, dead letters, disabled targets,
rate limits that batch, one ticket per failure, and the operator's repairs (retry, enable)."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from escalation import tasks
from escalation.choices import ChannelKind, NotificationStatus, TrackerKind
from escalation.models import CredentialRotation, Failure, Notification, NotificationChannel, Team, TicketTracker
from escalation.models.failures import TimelineKind
from escalation.services.notifications import (
    DeliveryResult,
    channel_enable,
    notification_backoff,
    notifications_deliver,
)
from escalation.services.notifications import _claim as claim_without_sending
from portal.audit import Actor
from portal.models import AuditEntry
from tests.concurrency import run_together
from tests.escalation.ingest_support import fixture, ok, upload
from tests.factories import TeamFactory, report_failure
from tests.recorder import Answer, outbox_entry

pytestmark = pytest.mark.django_db

SECRET = "whsec-do-not-leak-0123456789"  # noqa: S105 - a test value
TOKEN = "tok-do-not-leak-9876543210"  # noqa: S105 - a test value


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def failure(api):
    return report_failure(api)


def make_channel(recorder, path: str = "/hook", **fields) -> NotificationChannel:
    defaults = {"kind": ChannelKind.SLACK, "name": "#alerts", "url": recorder.url(path), "rate_limit_per_minute": 20}
    return NotificationChannel.objects.create(team=TeamFactory(), **{**defaults, **fields})


def make_tracker(recorder, **fields) -> TicketTracker:
    defaults = {"kind": TrackerKind.GITHUB, "base_url": recorder.base_url, "project": "acme/shop", "token": TOKEN}
    return TicketTracker.objects.create(team=TeamFactory(), **{**defaults, **fields})


def fresh(row):
    row.refresh_from_db()
    return row


# --- retries, backoff, dead letters ---


def test_a_500_then_200_delivers_exactly_once_with_one_notification_id(recorder, failure, now):
    recorder.script("/hook", 500, 200)
    entry = outbox_entry([failure], now=now, channel=make_channel(recorder))

    first = notifications_deliver(now=now)
    assert (first.retrying, fresh(entry).status, entry.attempts) == (1, NotificationStatus.PENDING, 1)
    assert entry.next_attempt_at == now + timedelta(seconds=30)
    assert "HTTP 500" in entry.last_error

    assert notifications_deliver(now=now + timedelta(seconds=10)).claimed == 0  # still backing off
    assert notifications_deliver(now=now + timedelta(seconds=31)).delivered == 1
    notifications_deliver(now=now + timedelta(hours=2))

    assert fresh(entry).status == NotificationStatus.DELIVERED
    assert entry.delivered_at == now + timedelta(seconds=31)
    assert [r.headers["notification-id"] for r in recorder.requests] == [str(entry.uid)] * 2
    assert Notification.objects.filter(status=NotificationStatus.DELIVERED).count() == 1


@pytest.mark.parametrize(("attempts", "seconds"), [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (30, 3600)])
def test_the_backoff_doubles_from_the_base_and_stops_at_an_hour(attempts, seconds):
    assert notification_backoff(attempts) == timedelta(seconds=seconds)


def test_a_target_always_down_ends_as_a_dead_letter_after_the_last_attempt(recorder, failure, now, settings):
    settings.PORTAL_NOTIFY_MAX_ATTEMPTS = 3
    recorder.script("/hook", 503)
    channel = make_channel(recorder)
    entry = outbox_entry([failure], now=now, channel=channel)

    for hour in range(5):
        notifications_deliver(now=now + timedelta(hours=hour))

    assert (fresh(entry).status, entry.attempts) == (NotificationStatus.DEAD, 3)
    assert "HTTP 503" in entry.last_error
    assert len(recorder.requests) == 3
    assert fresh(channel).is_enabled  # down is not gone: the channel stays enabled


def test_a_410_disables_the_channel_and_its_later_entries_wait_until_it_is_enabled(recorder, api, now, qa_analyst):
    recorder.script("/hook", 410, 200)
    channel = make_channel(recorder)
    gone = outbox_entry([report_failure(api, job="a")], now=now, channel=channel)

    result = notifications_deliver(now=now)

    assert (result.dead, result.disabled) == (1, 1)
    assert fresh(gone).status == NotificationStatus.DEAD
    assert not fresh(channel).is_enabled
    assert channel.disabled_at == now
    assert "HTTP 410 (gone)" in channel.last_error

    later = outbox_entry([report_failure(api, job="b")], now=now, channel=channel)
    assert notifications_deliver(now=now + timedelta(hours=1)).claimed == 0
    assert (fresh(later).status, later.attempts) == (NotificationStatus.PENDING, 0)
    assert len(recorder.requests) == 1

    assert channel_enable(channel_ids=[channel.pk], actor=Actor.of_user(qa_analyst, "admin"), now=now) == 1
    notifications_deliver(now=now + timedelta(hours=1))
    assert fresh(later).status == NotificationStatus.DELIVERED
    assert fresh(gone).status == NotificationStatus.DEAD  # a dead letter waits for its own retry
    assert fresh(channel).is_enabled and channel.last_error == ""


def test_a_timeout_is_transient(recorder, failure, now, settings):
    settings.PORTAL_HTTP_TIMEOUT = 0.3
    recorder.script("/hook", Answer(200, "late", delay=1.5))
    channel = make_channel(recorder)
    entry = outbox_entry([failure], now=now, channel=channel)

    assert notifications_deliver(now=now).retrying == 1

    assert fresh(entry).status == NotificationStatus.PENDING
    assert "no answer within 0.3 s" in entry.last_error
    assert fresh(channel).is_enabled


def test_a_refused_connection_is_transient(failure, now):
    channel = NotificationChannel.objects.create(
        team=TeamFactory(), kind=ChannelKind.SLACK, name="#x", url="http://127.0.0.1:9/hook"
    )
    entry = outbox_entry([failure], now=now, channel=channel)

    notifications_deliver(now=now)

    assert fresh(entry).status == NotificationStatus.PENDING
    assert "connection failed" in entry.last_error
    assert "/hook" not in entry.last_error  # the URL (a Slack webhook's path is its secret) stays out
    assert fresh(channel).is_enabled


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/hook", "http://"])
def test_an_invalid_url_is_permanent(failure, now, url):
    channel = NotificationChannel.objects.create(team=TeamFactory(), kind=ChannelKind.WEBHOOK, name="#x", url=url,
                                                 secret=SECRET)  # fmt: skip
    entry = outbox_entry([failure], now=now, channel=channel)

    notifications_deliver(now=now)

    assert fresh(entry).status == NotificationStatus.DEAD
    assert not fresh(channel).is_enabled
    assert channel.last_error == "invalid URL"


def test_a_killed_worker_leaves_its_claimed_entry_to_be_retried_when_the_lease_ends(recorder, failure, now):
    recorder.script("/hook", 200)
    entry = outbox_entry([failure], now=now, channel=make_channel(recorder))

    claim_without_sending(now=now, size=10, result=DeliveryResult())  # the worker dies before sending

    assert notifications_deliver(now=now + timedelta(minutes=1)).claimed == 0
    assert notifications_deliver(now=now + timedelta(minutes=6)).delivered == 1
    assert (fresh(entry).status, entry.attempts) == (NotificationStatus.DELIVERED, 2)


def test_the_error_of_a_permanent_failure_never_holds_the_secret_the_target_echoed(recorder, failure, now):
    recorder.script("/hook", Answer(403, f"bad signature for key {SECRET}"))
    channel = make_channel(recorder, kind=ChannelKind.WEBHOOK, secret=SECRET)
    entry = outbox_entry([failure], now=now, channel=channel)

    notifications_deliver(now=now)

    assert "credentials refused" in fresh(channel).last_error
    assert SECRET not in channel.last_error and SECRET not in fresh(entry).last_error
    audit = AuditEntry.objects.get(object_id=str(channel.pk), content_type__model="notificationchannel")
    assert audit.after["is_enabled"] is False
    assert SECRET not in str(audit.before) + str(audit.after) + audit.reason


# --- rate limits ---


def test_over_the_rate_limit_the_rest_goes_in_one_batch_message(recorder, api, now):
    recorder.script("/hook", 200)
    channel = make_channel(recorder, rate_limit_per_minute=3)
    entries = [outbox_entry([report_failure(api, job=f"job-{i}")], now=now, channel=channel) for i in range(6)]

    result = notifications_deliver(now=now)

    assert len(recorder.requests) == 3  # two alone, one batch
    assert (result.delivered, result.batched) == (3, 4)
    batch = fresh(entries[2]).batch
    assert batch.status == NotificationStatus.DELIVERED
    assert sorted(n.pk for n in batch.batched.all()) == sorted(e.pk for e in entries[2:])
    assert {fresh(e).status for e in entries[2:]} == {NotificationStatus.BATCHED}
    assert len(batch.data["items"]) == 4
    assert batch.failures.count() == 4
    sections = [b for b in recorder.requests[-1].json()["blocks"] if b["type"] == "section"]
    assert len(sections) == 4
    assert all(entry.subject in str(sections) for entry in entries[2:])


def test_a_full_window_defers_the_next_entry_until_the_oldest_message_leaves_it(recorder, api, now):
    recorder.script("/hook", 200)
    channel = make_channel(recorder, rate_limit_per_minute=2)
    for i in range(2):
        outbox_entry([report_failure(api, job=f"job-{i}")], now=now, channel=channel)
    notifications_deliver(now=now)
    late = outbox_entry([report_failure(api, job="late")], now=now, channel=channel)

    assert notifications_deliver(now=now + timedelta(seconds=20)).deferred == 1
    assert (fresh(late).status, late.next_attempt_at, late.attempts) == (
        NotificationStatus.PENDING,
        now + timedelta(minutes=1),
        0,
    )
    notifications_deliver(now=now + timedelta(minutes=1))
    assert fresh(late).status == NotificationStatus.DELIVERED
    assert len(recorder.requests) == 3


# --- tickets: one per failure ---


def test_a_ticket_stores_its_key_and_url_on_the_failure_with_a_timeline_entry(recorder, failure, now):
    recorder.script("/repos/acme/shop/issues", Answer(201, {"number": 42, "html_url": "https://github.com/i/42"}))
    entry = outbox_entry([failure], now=now, tracker=make_tracker(recorder))

    notifications_deliver(now=now)

    assert fresh(entry).status == NotificationStatus.DELIVERED
    assert (fresh(failure).ticket_key, failure.ticket_url) == ("#42", "https://github.com/i/42")
    opened = failure.timeline.get(kind=TimelineKind.TICKET_OPENED)
    assert "#42" in opened.message and opened.data["notification"] == str(entry.uid)


def test_a_failure_never_gets_a_second_ticket(recorder, failure, now):
    recorder.script("/repos/acme/shop/issues", Answer(201, {"number": 42, "html_url": "https://github.com/i/42"}))
    tracker = make_tracker(recorder)
    outbox_entry([failure], now=now, tracker=tracker, dedupe_key="first")
    second = outbox_entry([failure], now=now, tracker=tracker, dedupe_key="second")

    result = notifications_deliver(now=now)

    assert (result.delivered, result.skipped) == (2, 1)
    assert len(recorder.requests) == 1
    assert (fresh(second).status, second.last_error) == (
        NotificationStatus.DELIVERED,
        "not sent: every failure has a ticket already",
    )
    assert fresh(failure).ticket_key == "#42"


def test_a_ticket_that_fails_releases_its_failures_for_the_next_try(recorder, failure, now):
    recorder.script("/repos/acme/shop/issues", 502, Answer(201, {"number": 7, "html_url": "https://github.com/i/7"}))
    entry = outbox_entry([failure], now=now, tracker=make_tracker(recorder))

    notifications_deliver(now=now)
    assert fresh(failure).ticket_key == ""
    notifications_deliver(now=now + timedelta(minutes=1))

    assert fresh(entry).status == NotificationStatus.DELIVERED
    assert fresh(failure).ticket_key == "#7"


def test_a_leaked_credential_opens_a_ticket_to_securitys_tracker_at_once(recorder, api, now):
    recorder.script("/repos/acme/security/issues", Answer(201, {"number": 5, "html_url": "https://github.com/s/5"}))
    tracker = TicketTracker.objects.create(
        team=Team.objects.get(name="Security"), kind=TrackerKind.GITHUB, base_url=recorder.base_url,
        project="acme/security", token=TOKEN,
    )  # fmt: skip
    ok(upload(api, "secrets", fixture("secret-scan", "gitleaks__json_simple.json")))
    rotation = CredentialRotation.objects.get()

    entry = Notification.objects.get(tracker=tracker)
    assert entry.dedupe_key == f"rotation:{rotation.failure_id}:ticket"
    assert entry.subject.startswith("Rotate the leaked credential: acme/shop main")
    assert list(entry.failures.all()) == [rotation.failure]

    notifications_deliver(now=timezone.now())
    assert Failure.objects.get(pk=rotation.failure_id).ticket_key == "#5"
    assert recorder.requests[0].json()["title"] == entry.subject


def test_no_tracker_for_security_means_no_ticket_entry(api):
    ok(upload(api, "secrets", fixture("secret-scan", "gitleaks__json_simple.json")))
    assert CredentialRotation.objects.count() == 1
    assert not Notification.objects.exists()


# --- the operator: admin actions, the command, the task ---


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def dead_entry(recorder, failure, now) -> Notification:
    recorder.script("/hook", 404, 200)
    channel = make_channel(recorder)
    entry = outbox_entry([failure], now=now, channel=channel)
    notifications_deliver(now=now)
    assert fresh(entry).status == NotificationStatus.DEAD
    return entry


def test_the_admin_retry_action_makes_a_dead_letter_pending_again(recorder, failure, now, qa_analyst):
    entry = dead_entry(recorder, failure, now)
    url = reverse("admin:escalation_notification_changelist")

    response = logged_in(qa_analyst).post(url, {"action": "retry", "_selected_action": [entry.pk]})

    assert response.status_code == 302
    assert (fresh(entry).status, entry.attempts) == (NotificationStatus.PENDING, 0)
    assert AuditEntry.objects.filter(object_id=str(entry.pk), content_type__model="notification").exists()


def test_a_role_without_the_retry_permission_cannot_retry(recorder, failure, now, product_owner):
    entry = dead_entry(recorder, failure, now)
    url = reverse("admin:escalation_notification_changelist")

    logged_in(product_owner).post(url, {"action": "retry", "_selected_action": [entry.pk]})

    assert fresh(entry).status == NotificationStatus.DEAD


def test_the_admin_enable_and_retry_action_enables_the_channel(recorder, failure, now, qa_analyst):
    entry = dead_entry(recorder, failure, now)
    channel = entry.channel
    url = reverse("admin:escalation_notificationchannel_changelist")

    logged_in(qa_analyst).post(url, {"action": "enable_and_retry", "_selected_action": [channel.pk]})

    assert fresh(channel).is_enabled and channel.disabled_at is None


def test_the_admin_enable_and_retry_action_enables_the_tracker(recorder, failure, now, qa_analyst):
    recorder.script("/repos/acme/shop/issues", 401)
    tracker = make_tracker(recorder)
    outbox_entry([failure], now=now, tracker=tracker)
    notifications_deliver(now=now)
    assert not fresh(tracker).is_enabled
    url = reverse("admin:escalation_tickettracker_changelist")

    logged_in(qa_analyst).post(url, {"action": "enable_and_retry", "_selected_action": [tracker.pk]})

    assert fresh(tracker).is_enabled and tracker.last_error == ""


def test_the_outbox_pages_list_filter_search_and_show_an_entry(recorder, failure, now, qa_analyst):
    entry = dead_entry(recorder, failure, now)
    client = logged_in(qa_analyst)
    url = reverse("admin:escalation_notification_changelist")

    for params in ({"status": "dead"}, {"step": "level_1"}, {"q": str(entry.uid)[:8]}):
        response = client.get(url, params)
        assert response.status_code == 200
        assert [n.pk for n in response.context["cl"].result_list] == [entry.pk]
    assert client.get(url, {"status": "delivered"}).context["cl"].result_count == 0
    page = client.get(reverse("admin:escalation_notification_change", args=[entry.pk]))
    assert page.status_code == 200
    assert "HTTP 404" in page.content.decode()


def test_the_command_and_the_task_run_one_pass_and_say_what_it_did(recorder, failure, now, capsys):
    recorder.script("/hook", 200)
    channel = make_channel(recorder)
    outbox_entry([failure], now=now, channel=channel, dedupe_key="a")

    call_command("deliver_notifications")
    assert "1 notifications claimed, 1 delivered" in capsys.readouterr().out

    outbox_entry([failure], now=timezone.now(), channel=channel, dedupe_key="b")
    assert tasks.notifications_deliver().startswith("1 notifications claimed, 1 delivered")


# --- two workers at once ---


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_at_once_deliver_each_entry_once(recorder, api):
    recorder.script("/hook", Answer(200, "ok", delay=0.05))
    now = timezone.now()
    channel = make_channel(recorder, rate_limit_per_minute=0)
    entries = [outbox_entry([report_failure(api, job=f"job-{i}")], now=now, channel=channel) for i in range(30)]
    run_together([lambda: notifications_deliver(now=now)] * 2)

    assert len(recorder.requests) == 30
    assert len({r.headers["notification-id"] for r in recorder.requests}) == 30
    assert {fresh(e).status for e in entries} == {NotificationStatus.DELIVERED}
