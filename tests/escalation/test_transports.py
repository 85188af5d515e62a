"""What each transport sends, byte for byte where it matters, to a real local HTTP or SMTP server:
Slack Block Kit, the signed JSON webhook, e-mail, GitHub, Jira v2 and v3, Linear; and how errors classify."""

import base64
import email
import hashlib
import hmac
import json
import socket
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from escalation.choices import ChannelKind, NotificationStatus, TrackerKind
from escalation.models import Failure, NotificationChannel, TicketTracker
from escalation.services.notifications import failure_url, notifications_deliver
from escalation.transports import LINEAR_ISSUE_CREATE, duration_text, sla_countdown
from tests.factories import TeamFactory, report_failure
from tests.recorder import Answer, outbox_entry

pytestmark = pytest.mark.django_db

SECRET = "whsec-transport-test-secret"  # noqa: S105 - a test value
TOKEN = "tok-transport-test-token"  # noqa: S105 - a test value


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def failure(api, now):
    """A failure due in 1 h 20 min."""
    failure = report_failure(api)
    Failure.objects.filter(pk=failure.pk).update(sla_due_at=now + timedelta(hours=1, minutes=20, seconds=30))
    failure.refresh_from_db()
    return failure


def channel(kind: str, url: str = "", **fields) -> NotificationChannel:
    return NotificationChannel.objects.create(team=TeamFactory(), kind=kind, name="#alerts", url=url, **fields)


def tracker(kind: str, base_url: str, **fields) -> TicketTracker:
    fields = {"project": "acme/shop", "token": TOKEN, **fields}
    return TicketTracker.objects.create(team=TeamFactory(), kind=kind, base_url=base_url, **fields)


def status_of(entry) -> str:
    entry.refresh_from_db()
    return entry.status


# --- the SLA countdown ---


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(80 * 60 + 30, "due in 1h 20m"), (-12 * 60, "breached 12m ago"), (26 * 3600, "due in 1d 2h"), (59, "due in 0m")],
)
def test_the_countdown_says_due_in_or_breached_ago_at_send_time(now, seconds, text):
    due = (now + timedelta(seconds=seconds)).isoformat()
    assert sla_countdown({"sla_due_at": due, "status": "open"}, now=now) == text


def test_the_countdown_of_a_paused_or_resolved_failure_says_so(now):
    assert sla_countdown({"sla_due_at": now.isoformat(), "is_paused": True}, now=now) == "SLA clock paused"
    assert sla_countdown({"sla_due_at": now.isoformat(), "status": "resolved"}, now=now) == "resolved"
    assert duration_text(3 * 86400 + 7200) == "3d 2h"


# --- chat channels ---


def test_slack_gets_a_block_kit_message_with_a_section_per_failure(recorder, failure, now):
    recorder.script("/slack", 200)
    entry = outbox_entry([failure], now=now, channel=channel(ChannelKind.SLACK, recorder.url("/slack")))

    notifications_deliver(now=now)

    [request] = recorder.requests
    assert request.headers["content-type"] == "application/json"
    assert request.headers["notification-id"] == str(entry.uid)
    body = request.json()
    assert body["text"] == entry.subject
    header, context, section = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": entry.subject}}
    assert context == {"type": "context", "elements": [{"type": "mrkdwn", "text": "SLA breached (level 1)"}]}
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    assert f"<{failure_url(failure.pk)}|#{failure.pk} unit_test in acme/shop main, job unit-tests>" in text
    assert f"Owner: {failure.owner_team.name}" in text
    assert "`unit_test`" in text
    assert "due in 1h 20m" in text
    assert status_of(entry) == NotificationStatus.DELIVERED


def test_slack_shows_breached_ago_when_the_due_time_has_passed_by_send_time(recorder, failure, now):
    recorder.script("/slack", 200)
    outbox_entry([failure], now=now, channel=channel(ChannelKind.SLACK, recorder.url("/slack")))

    notifications_deliver(now=now + timedelta(hours=1, minutes=33))

    assert "breached 12m ago" in recorder.requests[0].json()["blocks"][2]["text"]["text"]


def test_the_webhook_body_is_signed_with_hmac_sha256_of_the_raw_body(recorder, failure, now):
    recorder.script("/hook", 204)
    entry = outbox_entry([failure], now=now, channel=channel(ChannelKind.WEBHOOK, recorder.url("/hook"), secret=SECRET))

    notifications_deliver(now=now)

    [request] = recorder.requests
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-portal-signature"] == f"sha256={expected}"
    assert request.headers["x-portal-timestamp"] == str(int(now.timestamp()))
    body = request.json()
    assert body["notification_id"] == str(entry.uid) == request.headers["notification-id"]
    assert body["timestamp"] == int(now.timestamp())
    assert (body["step"], body["step_label"], body["subject"]) == ("level_1", "SLA breached (level 1)", entry.subject)
    [sent] = body["failures"]
    assert (sent["id"], sent["url"], sent["sla"]) == (failure.pk, failure_url(failure.pk), "due in 1h 20m")
    assert SECRET not in request.body.decode()
    assert status_of(entry) == NotificationStatus.DELIVERED


def test_a_webhook_without_a_signing_secret_is_a_permanent_error(recorder, failure, now):
    hook = channel(ChannelKind.WEBHOOK, recorder.url("/hook"))
    entry = outbox_entry([failure], now=now, channel=hook)

    notifications_deliver(now=now)

    assert status_of(entry) == NotificationStatus.DEAD
    hook.refresh_from_db()
    assert (hook.is_enabled, hook.last_error) == (False, "the webhook has no signing secret")
    assert not recorder.requests


# --- e-mail through a real SMTP server ---


class Inbox:
    def __init__(self, refuse: bool = False):
        self.messages: list[email.message.Message] = []
        self.envelopes = []
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's name
        if self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp(settings):
    def start(refuse: bool = False) -> Inbox:
        inbox = Inbox(refuse=refuse)
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
        controller.start()
        started.append(controller)
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.DEFAULT_FROM_EMAIL = "portal@example.com"
        return inbox

    started: list[Controller] = []
    yield start
    for controller in started:
        controller.stop()


def test_an_email_goes_through_smtp_with_text_html_and_the_notification_id(smtp, failure, now):
    inbox = smtp()
    mail = channel(ChannelKind.EMAIL, email_to="qa@example.com, lead@example.com")
    entry = outbox_entry([failure], now=now, channel=mail)

    notifications_deliver(now=now)

    assert status_of(entry) == NotificationStatus.DELIVERED
    [message] = inbox.messages
    assert sorted(inbox.envelopes[0].rcpt_tos) == ["lead@example.com", "qa@example.com"]
    assert message["Notification-Id"] == str(entry.uid)
    assert message["Subject"] == entry.subject
    assert message.get_content_type() == "multipart/alternative"
    text, html = (part.get_payload(decode=True).decode() for part in message.get_payload())
    assert failure_url(failure.pk) in text and "Due in 1h 20m" in text
    assert f'<a href="{failure_url(failure.pk)}">' in html


def test_refused_recipients_are_a_permanent_error(smtp, failure, now):
    smtp(refuse=True)
    mail = channel(ChannelKind.EMAIL, email_to="nobody@example.com")
    entry = outbox_entry([failure], now=now, channel=mail)

    notifications_deliver(now=now)

    assert status_of(entry) == NotificationStatus.DEAD
    mail.refresh_from_db()
    assert not mail.is_enabled and "recipients refused" in mail.last_error


def test_an_smtp_server_that_is_down_is_transient(settings, failure, now):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    mail = channel(ChannelKind.EMAIL, email_to="qa@example.com")
    entry = outbox_entry([failure], now=now, channel=mail)

    notifications_deliver(now=now)

    assert status_of(entry) == NotificationStatus.PENDING
    assert "SMTP delivery failed" in entry.last_error
    mail.refresh_from_db()
    assert mail.is_enabled


# --- ticket trackers ---


def test_github_gets_an_issue_and_the_failure_its_key_and_url(recorder, failure, now):
    recorder.script("/repos/acme/shop/issues", Answer(201, {"number": 42, "html_url": "https://github.com/x/42"}))
    entry = outbox_entry([failure], now=now, tracker=tracker(TrackerKind.GITHUB, recorder.base_url, labels="ci, sla"))

    notifications_deliver(now=now)

    [request] = recorder.requests
    assert (request.method, request.path) == ("POST", "/repos/acme/shop/issues")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["notification-id"] == str(entry.uid)
    body = request.json()
    assert set(body) == {"title", "body", "labels"}
    assert (body["title"], body["labels"]) == (entry.subject, ["ci", "sla"])
    assert f"({failure_url(failure.pk)})" in body["body"] and "due in 1h 20m" in body["body"]
    failure.refresh_from_db()
    assert (failure.ticket_key, failure.ticket_url) == ("#42", "https://github.com/x/42")


@pytest.mark.parametrize(("status", "outcome"), [(422, NotificationStatus.DEAD), (429, NotificationStatus.PENDING)])
def test_github_422_is_permanent_and_429_is_transient(recorder, failure, now, status, outcome):
    recorder.script("/repos/acme/shop/issues", Answer(status, {"message": "nope"}))
    github = tracker(TrackerKind.GITHUB, recorder.base_url)
    entry = outbox_entry([failure], now=now, tracker=github)

    notifications_deliver(now=now)

    assert status_of(entry) == outcome
    github.refresh_from_db()
    assert github.is_enabled == (outcome == NotificationStatus.PENDING)
    assert failure.__class__.objects.get(pk=failure.pk).ticket_key == ""


def test_jira_v2_gets_a_plain_text_description_with_basic_auth(recorder, failure, now):
    recorder.script("/rest/api/2/issue", Answer(201, {"id": "10001", "key": "OPS-7", "self": "x"}))
    jira = tracker(TrackerKind.JIRA_V2, recorder.base_url + "/", project="OPS", user="bot@example.com", labels="ci")
    entry = outbox_entry([failure], now=now, tracker=jira)

    notifications_deliver(now=now)

    [request] = recorder.requests
    assert request.path == "/rest/api/2/issue"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"bot@example.com:{TOKEN}".encode()).decode()
    fields = request.json()["fields"]
    assert fields["project"] == {"key": "OPS"}
    assert fields["summary"] == entry.subject
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["labels"] == ["ci"]
    assert isinstance(fields["description"], str)
    assert failure_url(failure.pk) in fields["description"] and "SLA breached (level 1)" in fields["description"]
    failure.refresh_from_db()
    assert (failure.ticket_key, failure.ticket_url) == ("OPS-7", f"{recorder.base_url}/browse/OPS-7")


def test_jira_v3_gets_an_atlassian_document_format_description(recorder, failure, now):
    recorder.script("/rest/api/3/issue", Answer(201, {"id": "10002", "key": "OPS-8"}))
    jira = tracker(TrackerKind.JIRA_V3, recorder.base_url, project="OPS", user="bot@example.com")
    outbox_entry([failure], now=now, tracker=jira)

    notifications_deliver(now=now)

    doc = recorder.to("/rest/api/3/issue")[0].json()["fields"]["description"]
    assert (doc["type"], doc["version"]) == ("doc", 1)
    paragraph, bullets = doc["content"]
    assert paragraph == {"type": "paragraph", "content": [{"type": "text", "text": "SLA breached (level 1)"}]}
    assert bullets["type"] == "bulletList"
    [item] = bullets["content"]
    assert item["type"] == "listItem"
    link, facts = item["content"][0]["content"]
    assert link["marks"] == [{"type": "link", "attrs": {"href": failure_url(failure.pk)}}]
    assert link["text"].startswith(f"#{failure.pk} unit_test")
    assert "due in 1h 20m" in facts["text"]
    assert Failure.objects.get(pk=failure.pk).ticket_key == "OPS-8"


def test_a_jira_401_disables_the_tracker_without_its_token_in_any_error(recorder, failure, now):
    recorder.script("/rest/api/2/issue", Answer(401, f"bad token {TOKEN}"))
    jira = tracker(TrackerKind.JIRA_V2, recorder.base_url, project="OPS", user="bot@example.com")
    entry = outbox_entry([failure], now=now, tracker=jira)

    notifications_deliver(now=now)

    jira.refresh_from_db()
    assert status_of(entry) == NotificationStatus.DEAD
    assert not jira.is_enabled and "credentials refused" in jira.last_error
    assert TOKEN not in jira.last_error + entry.last_error


def test_linear_gets_the_issue_create_mutation_with_variables(recorder, failure, now):
    answer = {"data": {"issueCreate": {"success": True, "issue": {"identifier": "ENG-3", "url": "https://l/ENG-3"}}}}
    recorder.script("/graphql", answer)
    linear = tracker(TrackerKind.LINEAR, recorder.base_url, project="team-uuid")
    entry = outbox_entry([failure], now=now, tracker=linear)

    notifications_deliver(now=now)

    [request] = recorder.requests
    assert request.headers["authorization"] == TOKEN
    body = request.json()
    assert body["query"] == LINEAR_ISSUE_CREATE
    assert "issueCreate(input: $input) { success issue { identifier url } }" in body["query"]
    payload = body["variables"]["input"]
    assert (payload["teamId"], payload["title"]) == ("team-uuid", entry.subject)
    assert failure_url(failure.pk) in payload["description"]
    failure.refresh_from_db()
    assert (failure.ticket_key, failure.ticket_url) == ("ENG-3", "https://l/ENG-3")


@pytest.mark.parametrize(
    ("code", "outcome"), [("INVALID_INPUT", NotificationStatus.DEAD), ("RATELIMITED", NotificationStatus.PENDING)]
)
def test_graphql_errors_in_a_200_answer_are_errors(recorder, failure, now, code, outcome):
    recorder.script("/graphql", {"errors": [{"message": "teamId is wrong", "extensions": {"code": code}}]})
    entry = outbox_entry([failure], now=now, tracker=tracker(TrackerKind.LINEAR, recorder.base_url, project="t"))

    notifications_deliver(now=now)

    assert status_of(entry) == outcome
    assert f"Linear: teamId is wrong ({code})" == entry.last_error
    assert Failure.objects.get(pk=failure.pk).ticket_key == ""


def test_an_answer_that_is_not_json_is_transient(recorder, failure, now):
    recorder.script("/repos/acme/shop/issues", Answer(201, "<html>proxy</html>"))
    entry = outbox_entry([failure], now=now, tracker=tracker(TrackerKind.GITHUB, recorder.base_url))

    notifications_deliver(now=now)

    assert status_of(entry) == NotificationStatus.PENDING
    assert "not JSON" in entry.last_error


def test_a_batch_message_lists_its_items(recorder, api, now):
    recorder.script("/slack", 200)
    slack = channel(ChannelKind.SLACK, recorder.url("/slack"), rate_limit_per_minute=1)
    entries = [outbox_entry([report_failure(api, job=f"j{i}")], now=now, channel=slack) for i in range(3)]

    notifications_deliver(now=now)

    [request] = recorder.requests
    blocks = request.json()["blocks"]
    assert blocks[0]["text"]["text"] == "3 notifications (batched: over the channel's rate limit)"
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert [e.subject in t for e, t in zip(entries, texts, strict=True)] == [True] * 3
    assert json.dumps(blocks).count(failure_url(entries[0].failures.get().pk)) == 1
