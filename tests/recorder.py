"""A real local HTTP server for the notification tests, and the outbox entries they deliver.

``Recorder`` listens on 127.0.0.1 (a free port), records every request (method, path, headers, body)
and answers each path from a script: ``recorder.script("/hook", 500, 200)`` answers 500 to the first
request and 200 to every later one (the last answer repeats); an answer is a status, a JSON-able
dict or list (200 with that body), or an ``Answer`` (status, body, delay to provoke a timeout).
"""

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from escalation.choices import EscalationStep
from escalation.models import Failure, Notification, NotificationChannel, Team, TicketTracker
from escalation.services.notifications import Message, failure_summary, notifications_write


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = ""
    delay: float = 0.0


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder:
    def __init__(self):
        self.requests: list[Recorded] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "Recorder":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def script(self, path: str, *answers: int | dict | list | Answer) -> None:
        with self._lock:
            self._scripts[path] = [self._answer(a) for a in answers]

    def to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    @staticmethod
    def _answer(answer: int | dict | list | Answer) -> Answer:
        if isinstance(answer, Answer):
            return answer
        if isinstance(answer, int):
            return Answer(status=answer, body="ok" if answer < 300 else f"status {answer}")
        return Answer(status=200, body=answer)

    def _next(self, path: str) -> Answer:
        with self._lock:
            script = self._scripts.get(path) or [Answer(404, "no script for this path")]
            return script.pop(0) if len(script) > 1 else script[0]

    def _handler(self):
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                with recorder._lock:
                    recorder.requests.append(Recorded(self.command, self.path, headers, body))
                answer = recorder._next(self.path)
                if answer.delay:
                    threading.Event().wait(answer.delay)
                is_json = not isinstance(answer.body, str)
                payload = (json.dumps(answer.body) if is_json else answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json" if is_json else "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

        return Handler


# --- outbox entries, written the way the SLA sweep writes them ---


def outbox_entry(
    failures: list[Failure],
    *,
    now: datetime,
    channel: NotificationChannel | None = None,
    tracker: TicketTracker | None = None,
    step: str = EscalationStep.LEVEL_1,
    dedupe_key: str | None = None,
) -> Notification:
    teams = dict(Team.objects.values_list("pk", "name"))
    summaries = [failure_summary(f, teams=teams) for f in failures]
    first = failures[0]
    subject = f"SLA breached: {first.repository.name} {first.branch} {first.job_name}"
    data = {
        "step": step,
        "step_label": EscalationStep(step).label,
        "title": subject,
        "failures": summaries,
        "group": None,
        "url": summaries[0]["url"],
    }
    message = Message(
        subject=subject,
        body=f"{subject}\n{summaries[0]['url']}",
        data=data,
        failure_ids=[f.pk for f in failures],
        step=step,
        channel=channel,
        tracker=tracker,
        dedupe_key=dedupe_key,
    )
    [pk] = notifications_write([message], now=now)
    return Notification.objects.get(pk=pk)
