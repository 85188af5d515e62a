"""Notification transports: one class per channel and ticket-tracker kind, each sending one outbox entry.

A transport renders the entry's ``data`` (see ``services.notifications``) in its target's format and
raises ``TransportError`` with ``permanent`` set when repeating the call cannot help (gone, refused
credentials, invalid URL, rejected payload); the delivery service then disables the target. Every
HTTP call goes through ``requests`` with a timeout and the stable ``Notification-Id`` header.
Secrets (webhook keys, tokens, the path of a Slack webhook URL) never reach an error message.
"""

import hashlib
import hmac
import json
import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from escalation.choices import ChannelKind, TrackerKind
from escalation.models import Notification, NotificationChannel, TicketTracker

logger = logging.getLogger(__name__)

GITHUB_API_VERSION = "2022-11-28"
SLACK_MAX_SECTIONS = 45  # Slack allows 50 blocks a message; the header and context take the rest
SLACK_SECTION_CHARS = 3000  # Slack's limit on a section's text
_ERROR_EXCERPT = 300


@dataclass(frozen=True)
class TicketRef:
    """The ticket a tracker opened: its key (``#12``, ``OPS-7``, ``ENG-3``) and its page."""

    key: str
    url: str


class TransportError(Exception):
    """A delivery that did not happen. ``permanent``: the target refuses for good until someone fixes it."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


# --- rendering shared by every transport ---


def duration_text(seconds: float) -> str:
    """1d 3h, 1h 20m, 12m: the largest two units, minutes at least."""
    minutes = int(abs(seconds) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def sla_countdown(summary: dict, *, now: datetime) -> str:
    """'due in 1h 20m' or 'breached 12m ago', from the failure's due time at send time."""
    if summary.get("status") == "resolved":
        return "resolved"
    if summary.get("is_paused"):
        return "SLA clock paused"
    if not summary.get("sla_due_at"):
        return "no SLA"
    left = (datetime.fromisoformat(summary["sla_due_at"]) - now).total_seconds()
    return f"due in {duration_text(left)}" if left >= 0 else f"breached {duration_text(left)} ago"


def failure_line(summary: dict) -> str:
    """'#12 unit_test in acme/shop main, job unit-tests'."""
    return f"#{summary['id']} {summary['type']} in {summary['repository']} {summary['branch']}, job {summary['job']}"


def failure_facts(summary: dict, *, now: datetime) -> str:
    return f"owner {summary['owner']}, {sla_countdown(summary, now=now)}"


def text_lines(data: dict, *, now: datetime, markdown: bool) -> list[str]:
    """The message as lines of plain text or Markdown: the step, then one line per failure or batched item."""
    lines = [data.get("step_label") or "", ""]
    for item in data.get("items") or []:
        link = f"[{item['subject']}]({item['url']})" if markdown else f"{item['subject']}: {item['url']}"
        lines.append(f"- {link}")
    if not data.get("items"):
        for summary in data.get("failures") or []:
            label, facts = failure_line(summary), failure_facts(summary, now=now)
            lines.append(
                f"- [{label}]({summary['url']}): {facts}" if markdown else f"- {label}: {facts} {summary['url']}"
            )
    return lines


def scrub(text: str, *secrets: str) -> str:
    """An answer's excerpt with any secret the target echoed back removed."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return text


# --- HTTP ---


def http_post(
    url: str,
    *,
    notification: Notification,
    body: bytes,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    permanent_statuses: frozenset[int] = frozenset({401, 403, 404, 410}),
    secrets: tuple[str, ...] = (),
) -> requests.Response:
    """POST ``body`` with a timeout and the Notification-Id header; a non-2xx answer raises TransportError."""
    host = urlsplit(url).hostname or "?"
    sent_headers = {
        "Content-Type": "application/json",
        "User-Agent": "ci-escalation-portal",
        "Notification-Id": str(notification.uid),
        **(headers or {}),
    }
    try:
        response = requests.post(
            url, data=body, headers=sent_headers, auth=auth, timeout=settings.PORTAL_HTTP_TIMEOUT, allow_redirects=False
        )
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema):
        raise TransportError("invalid URL", permanent=True) from None
    except requests.exceptions.Timeout:
        raise TransportError(f"{host}: no answer within {settings.PORTAL_HTTP_TIMEOUT} s") from None
    except requests.exceptions.ConnectionError as exc:
        raise TransportError(f"{host}: connection failed ({_cause(exc)})") from None
    except requests.exceptions.RequestException as exc:
        raise TransportError(f"{host}: request failed ({type(exc).__name__})") from None
    if 200 <= response.status_code < 300:
        return response
    excerpt = scrub(response.text[:_ERROR_EXCERPT], *secrets).strip()
    status = response.status_code
    reason = {401: "credentials refused", 403: "credentials refused", 404: "not found", 410: "gone"}.get(status, "")
    message = f"{host} answered HTTP {status}{f' ({reason})' if reason else ''}: {excerpt}".rstrip(": ")
    raise TransportError(message, permanent=status in permanent_statuses)


def _cause(exc: Exception) -> str:
    """The innermost cause's class name: requests' own message names the URL, which may hold a secret."""
    for _ in range(5):
        inner = exc.__cause__ or (exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else None)
        if inner is None:
            break
        exc = inner
    reason = getattr(exc, "reason", None)
    return type(reason).__name__ if isinstance(reason, Exception) else type(exc).__name__


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# --- chat channels ---


class Transport:
    """Sends one notification to one target; ``now`` is the delivery pass's clock, for SLA countdowns."""

    def __init__(self, target: NotificationChannel | TicketTracker, *, now: datetime):
        self.target = target
        self.now = now

    def send(self, notification: Notification) -> TicketRef | None:
        raise NotImplementedError


class SlackTransport(Transport):
    """A Slack incoming webhook: a Block Kit message with a section per failure (or per batched item)."""

    def send(self, notification: Notification) -> None:
        http_post(self.target.url, notification=notification, body=json_bytes(self.payload(notification)))

    def payload(self, notification: Notification) -> dict:
        if notification.digest_id is not None:
            return self._digest(notification)
        data = notification.data
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": notification.subject[:150]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": data.get("step_label") or "Notification"}]},
        ]
        sections = [self._item(i) for i in data.get("items") or []] or [
            self._failure(f) for f in data.get("failures") or []
        ]
        blocks.extend(sections[:SLACK_MAX_SECTIONS])
        if len(sections) > SLACK_MAX_SECTIONS:
            more = f"and {len(sections) - SLACK_MAX_SECTIONS} more: <{data['url']}|open the portal>"
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
        return {"text": notification.subject, "blocks": blocks}

    def _digest(self, notification: Notification) -> dict:
        """A digest: its subject as the header, its text in mrkdwn sections of at most 3000 characters each."""
        data = notification.data
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": notification.subject[:150]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": data.get("step_label") or "Digest"}]},
        ]
        chunks = text_chunks(_mrkdwn(notification.digest.text), SLACK_SECTION_CHARS)
        blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": c}} for c in chunks[:SLACK_MAX_SECTIONS]]
        if len(chunks) > SLACK_MAX_SECTIONS:
            more = f"continued in the portal: <{data['url']}|open the digest>"
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
        return {"text": notification.subject, "blocks": blocks}

    def _failure(self, summary: dict) -> dict:
        text = (
            f"*<{summary['url']}|{_mrkdwn(failure_line(summary))}>*\n"
            f"Owner: {_mrkdwn(summary['owner'])} · Type: `{summary['type']}` · {sla_countdown(summary, now=self.now)}"
        )
        return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}

    def _item(self, item: dict) -> dict:
        text = f"*<{item['url']}|{_mrkdwn(item['subject'])}>*\n{_mrkdwn(item.get('step_label') or '')}"
        return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def text_chunks(text: str, limit: int) -> list[str]:
    """The text in pieces of at most ``limit`` characters, cut at line ends where a line fits."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines():
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            chunks.append(current)
            candidate = line
        current = candidate
    if current.strip():
        chunks.append(current)
    return [chunk for chunk in chunks if chunk.strip()]


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookTransport(Transport):
    """A JSON webhook signed with HMAC-SHA256 of the raw body: X-Portal-Signature: sha256=<hex>."""

    def send(self, notification: Notification) -> None:
        if not self.target.secret:
            raise TransportError("the webhook has no signing secret", permanent=True)
        timestamp = str(int(self.now.timestamp()))
        body = json_bytes(self.payload(notification, timestamp=timestamp))
        signature = hmac.new(self.target.secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-Portal-Signature": f"sha256={signature}", "X-Portal-Timestamp": timestamp}
        http_post(self.target.url, notification=notification, body=body, headers=headers, secrets=(self.target.secret,))

    def payload(self, notification: Notification, *, timestamp: str) -> dict:
        if notification.digest_id is not None:
            return self._digest(notification, timestamp=timestamp)
        data = notification.data
        failures = [{**f, "sla": sla_countdown(f, now=self.now)} for f in data.get("failures") or []]
        return {
            "notification_id": str(notification.uid),
            "timestamp": int(timestamp),  # inside the signed body, so a replay of an old body shows its age
            "step": notification.step,
            "step_label": data.get("step_label", ""),
            "subject": notification.subject,
            "body": notification.body,
            "url": data.get("url", ""),
            "group": data.get("group"),
            "failures": failures,
            "items": data.get("items") or [],
        }

    def _digest(self, notification: Notification, *, timestamp: str) -> dict:
        """A digest: its kind, audience, period, figures (as stored on the Digest) and text."""
        digest = notification.digest
        return {
            "notification_id": str(notification.uid),
            "timestamp": int(timestamp),
            "kind": digest.kind,
            "subject": notification.subject,
            "audience": digest.audience,
            "period": {"start": digest.period_start.isoformat(), "end": digest.period_end.isoformat()},
            "figures": digest.figures,
            "text": digest.text,
            "url": notification.data.get("url", ""),
        }


class EmailTransport(Transport):
    """E-mail through Django's mail settings: plain text with an HTML alternative, Notification-Id as a header."""

    def send(self, notification: Notification) -> None:
        to = [address.strip() for address in self.target.email_to.split(",") if address.strip()]
        if not to:
            raise TransportError("the channel has no e-mail address", permanent=True)
        text, html = self.bodies(notification)
        message = EmailMultiAlternatives(
            subject=" ".join(notification.subject.split()),  # a line break in a header is refused
            body=text,
            to=to,
            headers={"Notification-Id": str(notification.uid)},
            connection=get_connection(timeout=settings.PORTAL_HTTP_TIMEOUT),
        )
        message.attach_alternative(html, "text/html")
        try:
            message.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise TransportError(f"recipients refused (SMTP {codes})", permanent=all(c >= 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            raise TransportError(f"SMTP server answered {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:  # refused connection, timeout, TLS
            kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise TransportError(f"SMTP delivery failed ({kind})") from None

    def bodies(self, notification: Notification) -> tuple[str, str]:
        """The plain text and HTML: a digest's own (rendered when it was composed), else the notification's."""
        if notification.digest_id is not None:
            return notification.digest.text, notification.digest.html
        context = self.context(notification)
        text = render_to_string("escalation/email/notification.txt", context)
        return text, render_to_string("escalation/email/notification.html", context)

    def context(self, notification: Notification) -> dict:
        data = notification.data
        failures = [{**f, "sla": sla_countdown(f, now=self.now)} for f in data.get("failures") or []]
        return {
            "notification": notification,
            "subject": notification.subject,
            "step_label": data.get("step_label", ""),
            "failures": [] if data.get("items") else failures,
            "items": data.get("items") or [],
            "url": data.get("url", ""),
            "body": notification.body,
        }


# --- ticket trackers ---


def tracker_labels(tracker: TicketTracker) -> list[str]:
    return [label.strip() for label in tracker.labels.split(",") if label.strip()]


class GitHubTransport(Transport):
    """GitHub Issues REST: POST /repos/{owner}/{repo}/issues."""

    def send(self, notification: Notification) -> TicketRef:
        tracker = self.target
        body = {
            "title": notification.subject,
            "body": "\n".join(text_lines(notification.data, now=self.now, markdown=True)),
            "labels": tracker_labels(tracker),
        }
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {tracker.token}",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
        url = f"{tracker.base_url.rstrip('/')}/repos/{tracker.project.strip('/')}/issues"
        answer = _json(
            http_post(
                url,
                notification=notification,
                body=json_bytes(body),
                headers=headers,
                permanent_statuses=frozenset({400, 401, 403, 404, 410, 422}),
                secrets=(tracker.token,),
            )
        )
        try:
            return TicketRef(key=f"#{answer['number']}", url=answer["html_url"])
        except (KeyError, TypeError):
            raise TransportError("GitHub's answer has no issue number and html_url") from None


class JiraTransport(Transport):
    """Jira REST v2: POST /rest/api/2/issue with a plain-text description, basic auth (account e-mail, token)."""

    api = "2"

    def send(self, notification: Notification) -> TicketRef:
        tracker = self.target
        base = tracker.base_url.rstrip("/")
        fields = {
            "project": {"key": tracker.project},
            "summary": notification.subject[:255],
            "description": self.description(notification),
            "issuetype": {"name": tracker.issue_type},
            "labels": [label.replace(" ", "-") for label in tracker_labels(tracker)],
        }
        answer = _json(
            http_post(
                f"{base}/rest/api/{self.api}/issue",
                notification=notification,
                body=json_bytes({"fields": fields}),
                headers={"Accept": "application/json"},
                auth=(tracker.user, tracker.token),
                permanent_statuses=frozenset({400, 401, 403, 404, 410, 422}),
                secrets=(tracker.token,),
            )
        )
        key = answer.get("key") if isinstance(answer, dict) else None
        if not key:
            raise TransportError("Jira's answer has no issue key")
        return TicketRef(key=key, url=f"{base}/browse/{key}")

    def description(self, notification: Notification) -> Any:
        return "\n".join(text_lines(notification.data, now=self.now, markdown=False))


class JiraV3Transport(JiraTransport):
    """Jira REST v3: the description is an Atlassian Document Format doc (paragraph, bullet list, links)."""

    api = "3"

    def description(self, notification: Notification) -> dict:
        data = notification.data
        if data.get("items"):
            entries = [[_adf_link(item["subject"], item["url"])] for item in data["items"]]
        else:
            entries = [
                [_adf_link(failure_line(f), f["url"]), _adf_text(f": {failure_facts(f, now=self.now)}")]
                for f in data.get("failures") or []
            ]
        content: list[dict] = [{"type": "paragraph", "content": [_adf_text(data.get("step_label") or "Notification")]}]
        if entries:
            items = [{"type": "listItem", "content": [{"type": "paragraph", "content": e}]} for e in entries]
            content.append({"type": "bulletList", "content": items})
        return {"type": "doc", "version": 1, "content": content}


def _adf_text(text: str) -> dict:
    return {"type": "text", "text": text}


def _adf_link(text: str, url: str) -> dict:
    return {"type": "text", "text": text, "marks": [{"type": "link", "attrs": {"href": url}}]}


LINEAR_ISSUE_CREATE = (
    "mutation IssueCreate($input: IssueCreateInput!) "
    "{ issueCreate(input: $input) { success issue { identifier url } } }"
)
# Linear answers these GraphQL error codes for a request that may work later; any other error is permanent.
_LINEAR_TRANSIENT = frozenset({"RATELIMITED", "INTERNAL_SERVER_ERROR", "INTERNAL_ERROR"})


class LinearTransport(Transport):
    """Linear GraphQL: the issueCreate mutation; errors in a 200 answer are errors too."""

    def send(self, notification: Notification) -> TicketRef:
        tracker = self.target
        variables = {
            "input": {
                "teamId": tracker.project,
                "title": notification.subject,
                "description": "\n".join(text_lines(notification.data, now=self.now, markdown=True)),
            }
        }
        answer = _json(
            http_post(
                f"{tracker.base_url.rstrip('/')}/graphql",
                notification=notification,
                body=json_bytes({"query": LINEAR_ISSUE_CREATE, "variables": variables}),
                headers={"Authorization": tracker.token},
                permanent_statuses=frozenset({400, 401, 403, 404, 410}),
                secrets=(tracker.token,),
            )
        )
        if not isinstance(answer, dict):
            raise TransportError("Linear's answer is not a JSON object")
        if answer.get("errors"):
            raise _linear_error(answer["errors"], tracker.token)
        created = (answer.get("data") or {}).get("issueCreate") or {}
        issue = created.get("issue") or {}
        if not created.get("success") or not issue.get("identifier"):
            raise TransportError("Linear did not create the issue", permanent=True)
        return TicketRef(key=issue["identifier"], url=issue.get("url", ""))


def _linear_error(errors: Any, token: str) -> TransportError:
    errors = errors if isinstance(errors, list) else [errors]
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    code = str((first.get("extensions") or {}).get("code", ""))
    message = scrub(str(first.get("message", "unknown error"))[:_ERROR_EXCERPT], token)
    return TransportError(f"Linear: {message}{f' ({code})' if code else ''}", permanent=code not in _LINEAR_TRANSIENT)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise TransportError(f"the answer (HTTP {response.status_code}) is not JSON") from None


CHANNEL_TRANSPORTS: dict[str, type[Transport]] = {
    ChannelKind.SLACK: SlackTransport,
    ChannelKind.WEBHOOK: WebhookTransport,
    ChannelKind.EMAIL: EmailTransport,
}
TRACKER_TRANSPORTS: dict[str, type[Transport]] = {
    TrackerKind.GITHUB: GitHubTransport,
    TrackerKind.JIRA_V2: JiraTransport,
    TrackerKind.JIRA_V3: JiraV3Transport,
    TrackerKind.LINEAR: LinearTransport,
}


def transport_for(notification: Notification, *, now: datetime) -> Transport:
    """The transport of the notification's channel or tracker kind."""
    if notification.channel_id is not None:
        return CHANNEL_TRANSPORTS[notification.channel.kind](notification.channel, now=now)
    return TRACKER_TRANSPORTS[notification.tracker.kind](notification.tracker, now=now)
