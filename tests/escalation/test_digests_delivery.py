"""Digests on the wire (Slack Block Kit, the signed JSON webhook, e-mail with its HTML) and one digest per
period when two senders race on PostgreSQL."""

import hashlib
import hmac
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection, connections, transaction

from escalation.choices import ChannelKind, DigestKind, NotificationStatus
from escalation.models import Digest, Notification, NotificationChannel, Team
from escalation.services.digests.compose import digest_send
from escalation.services.digests.schedule import digests_planned
from escalation.services.notifications import Message, notifications_deliver, notifications_write
from escalation.transports import SLACK_MAX_SECTIONS, SLACK_SECTION_CHARS
from tests.concurrency import run_together
from tests.escalation.test_digests import H, failure
from tests.escalation.test_transports import smtp  # noqa: F401 - the fixture: a real SMTP server

SECRET = "whsec-digest-test-secret"  # noqa: S105 - a test value
NOW = datetime(2026, 11, 19, 9, 30, tzinfo=UTC)  # Thursday: the Scrum Master's team's standup (UTC)


def channel(kind: str, name: str, team: str = "Scrum", **fields) -> NotificationChannel:
    return NotificationChannel.objects.create(team=Team.objects.get(name=team), kind=kind, name=name, **fields)


@pytest.mark.django_db
def test_the_scrum_masters_digest_reaches_slack_a_signed_webhook_and_e_mail(api, recorder, smtp):  # noqa: F811
    inbox = smtp()
    recorder.script("/slack", 200)
    recorder.script("/hook", 200)
    channel(ChannelKind.SLACK, "#scrum", url=recorder.url("/slack"))
    channel(ChannelKind.WEBHOOK, "scrum-hook", url=recorder.url("/hook"), secret=SECRET)
    channel(ChannelKind.EMAIL, "scrum-mail", email_to="scrum@example.com")
    breached = NOW - 20 * H
    stuck = failure(
        api, "cart", breached - H, owner="Backend", sla_due_at=breached, breached_at=breached, escalation_level=2
    )
    [plan] = [p for p in digests_planned(DigestKind.DAILY, now=NOW, team_name="Scrum") if p.role == "scrum_master"]
    sent = digest_send(plan, now=NOW)
    assert sent.notifications == 3

    result = notifications_deliver(now=NOW)

    assert result.delivered == 3
    digest = sent.digest
    rows = {row.channel.kind: row for row in Notification.objects.filter(digest=digest).select_related("channel")}
    assert {row.status for row in rows.values()} == {NotificationStatus.DELIVERED}

    [slack] = recorder.to("/slack")
    body = slack.json()
    assert slack.headers["notification-id"] == str(rows[ChannelKind.SLACK].uid)
    assert body["text"] == digest.subject and body["blocks"][0]["text"]["text"] == digest.subject
    sections = [b["text"]["text"] for b in body["blocks"] if b["type"] == "section"]
    assert all(b["text"]["type"] == "mrkdwn" for b in body["blocks"] if b["type"] == "section")
    assert f"[level 2] #{stuck.pk} unit_test" in "\n".join(sections)

    [hook] = recorder.to("/hook")
    expected = hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-portal-signature"] == f"sha256={expected}"
    payload = hook.json()
    assert payload["kind"] == "daily" and payload["audience"] == "scrum_master"
    assert payload["period"] == {"start": "2026-11-18T09:30:00+00:00", "end": "2026-11-19T09:30:00+00:00"}
    assert payload["figures"]["level_2"]["items"][0]["id"] == stuck.pk
    assert payload["text"] == digest.text and payload["notification_id"] == str(rows[ChannelKind.WEBHOOK].uid)

    [mail] = inbox.messages
    assert "".join(mail["Subject"].splitlines()) == digest.subject and mail["Notification-Id"] == str(
        rows[ChannelKind.EMAIL].uid
    )
    text, html = (part.get_payload(decode=True).decode() for part in mail.get_payload())
    assert text.replace("\r\n", "\n").strip() == digest.text.strip()
    assert html.replace("\r\n", "\n").strip() == digest.html.strip()
    assert "<style" not in html and "src=" not in html and 'style="' in html  # self-contained, inline styles


@pytest.mark.django_db
def test_a_long_digest_fits_slacks_section_and_block_limits(recorder):
    recorder.script("/slack", 200)
    slack = channel(ChannelKind.SLACK, "#scrum", url=recorder.url("/slack"))
    lines = [f"- <script> failure {n} & more " + "x" * 120 for n in range(3000)]
    lines.insert(1, "y" * 7000)  # a line longer than a section is cut
    digest = Digest.objects.create(
        kind=DigestKind.DAILY,
        audience="scrum_master",
        team=slack.team,
        role="scrum_master",
        period_start=NOW,
        period_end=NOW,
        subject="Standup digest, all teams",
        figures={},
        text="\n".join(lines),
        html="<p></p>",
        created_at=NOW,
    )
    data = {"step_label": "Daily standup digest", "title": digest.subject, "url": "http://portal.test/d/1"}
    message = Message(
        subject=digest.subject, body=digest.text, data=data, failure_ids=[], channel=slack, digest_id=digest.pk
    )
    notifications_write([message], now=NOW)

    notifications_deliver(now=NOW)

    blocks = recorder.to("/slack")[0].json()["blocks"]
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(blocks) <= 50 and len(sections) == SLACK_MAX_SECTIONS
    assert all(len(s["text"]["text"]) <= SLACK_SECTION_CHARS for s in sections)
    assert "&lt;script&gt; failure 0 &amp; more" in sections[0]["text"]["text"]
    assert sections[1]["text"]["text"] == "y" * SLACK_SECTION_CHARS
    assert "<http://portal.test/d/1|open the digest>" in blocks[-1]["elements"][0]["text"]


@pytest.mark.django_db
def test_over_the_rate_limit_a_digest_waits_for_the_next_window_instead_of_joining_the_batch(recorder):
    recorder.script("/slack", 200)
    slack = channel(ChannelKind.SLACK, "#scrum", url=recorder.url("/slack"), rate_limit_per_minute=2)
    digest = Digest.objects.create(
        kind=DigestKind.DAILY, audience="scrum_master", team=slack.team, role="scrum_master", period_start=NOW,
        period_end=NOW, subject="Standup digest, all teams", figures={}, text="- #1 breached", html="<p></p>",
        created_at=NOW,
    )  # fmt: skip
    data = {"step_label": "Daily standup digest", "title": digest.subject, "url": "http://portal.test/d/1"}
    chat = [Message(subject=f"alert {n}", body="", data={}, failure_ids=[], channel=slack) for n in range(3)]
    [*alerts, entry_id] = notifications_write(
        [*chat, Message(digest.subject, digest.text, data, [], channel=slack, digest_id=digest.pk)], now=NOW
    )
    entry = Notification.objects.get(pk=entry_id)

    result = notifications_deliver(now=NOW)

    entry.refresh_from_db()
    assert (result.batched, result.deferred) == (2, 1)
    assert entry.status == NotificationStatus.PENDING and entry.batch_id is None
    assert entry.next_attempt_at > NOW
    later = notifications_deliver(now=entry.next_attempt_at)
    entry.refresh_from_db()
    assert later.delivered == 1 and entry.status == NotificationStatus.DELIVERED
    assert recorder.to("/slack")[-1].json()["text"] == "Standup digest, all teams"


# --- two senders at once ---


def _weekly_plan():
    [plan] = digests_planned(DigestKind.WEEKLY, now=datetime(2026, 11, 16, 9, 30, tzinfo=UTC), team_name="Product")
    return plan


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_sender_racing_one_that_has_not_committed_waits_and_then_sends_nothing():
    channel(ChannelKind.SLACK, "#product", team="Product", url="http://127.0.0.1:9/")
    plan, results, inserted, release = _weekly_plan(), {}, threading.Event(), threading.Event()
    moment = datetime(2026, 11, 16, 9, 30, tzinfo=UTC)

    def first():
        try:
            with transaction.atomic():
                results["first"] = digest_send(plan, now=moment)
                inserted.set()
                release.wait(60)
        finally:
            connections.close_all()

    def second():
        try:
            inserted.wait(60)
            results["second"] = digest_send(plan, now=moment)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inserted.wait(60)
    for _ in range(600):  # the second sender reaches the unique index and waits for the first to commit
        if _waiting_on_a_lock():
            break
        threading.Event().wait(0.05)
    else:
        release.set()
        pytest.fail("the second sender never waited for the first")
    release.set()
    for thread in threads:
        thread.join(60)

    assert results["first"].created and results["first"].notifications == 1
    assert not results["second"].created and results["second"].notifications == 0
    assert results["second"].digest.pk == results["first"].digest.pk
    assert Digest.objects.count() == 1 and Notification.objects.count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_senders_started_together_store_one_digest_and_one_message_per_channel():
    channel(ChannelKind.SLACK, "#product", team="Product", url="http://127.0.0.1:9/")
    channel(ChannelKind.WEBHOOK, "product-hook", team="Product", url="http://127.0.0.1:9/", secret=SECRET)
    plan = _weekly_plan()
    moment = datetime(2026, 11, 16, 9, 30, tzinfo=UTC)

    results = run_together([lambda: digest_send(plan, now=moment)] * 2)

    assert sorted(r.created for r in results) == [False, True]
    assert sum(r.notifications for r in results) == 2
    assert Digest.objects.count() == 1
    assert sorted(Notification.objects.values_list("channel__name", flat=True)) == ["#product", "product-hook"]
