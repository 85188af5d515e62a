"""`manage.py run_portal` (what `make run` starts): Ctrl-C stops the web server and every worker process.

It runs as `make run` runs it, on an embedded SQLite file: there django-q2's cluster, signalled by the
terminal and by run_portal at once, used to exit before its worker processes, which lived on.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process; None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else (fields[0], int(fields[1]))


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``, with its command line."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := state(int(entry.name))):
            parents[int(entry.name)] = found[1]
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - below
        below |= frontier
    commands = {}
    for pid in below:
        try:
            commands[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return commands


def test_ctrl_c_stops_the_web_server_and_every_worker_process(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
    )
    for attempt in range(3):  # the cluster's early exit came and went with its timing
        start_and_interrupt(env, tmp_path / f"run_portal-{attempt}.log")


def start_and_interrupt(env: dict[str, str], log_path: Path) -> None:
    port = free_port()
    log = log_path.open("wb")
    portal = subprocess.Popen(
        [sys.executable, "manage.py", "run_portal", "--bind", f"127.0.0.1:{port}", "--web-workers", "1"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline, children = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            children = descendants(portal.pid)
            workers = [c for c in children.values() if "qcluster" in c]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    web_up = answer.status == 200
            except OSError:
                web_up = False
            cluster_up = b"running." in log_path.read_bytes()  # django-q2: "Q Cluster ... running."
            if web_up and cluster_up and len(workers) >= 3:  # the cluster's sentinel and its processes
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the portal did not start: {log_path.read_text()[-3000:]}")
        assert any("gunicorn" in c for c in children.values())

        os.killpg(portal.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
        assert portal.wait(timeout=40) == 0
        deadline = time.monotonic() + 10
        while (left := {pid: c for pid, c in children.items() if state(pid)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == {}, f"still running after Ctrl-C: {left}"
    finally:
        if portal.poll() is None:
            os.killpg(portal.pid, signal.SIGKILL)
        for pid in descendants(portal.pid):
            os.kill(pid, signal.SIGKILL)
        log.close()
