import contextlib
import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from escalation.services.engine import schedules_ensure


class Command(BaseCommand):
    help = "Run the web server (gunicorn) and one django-q2 worker together; Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, bind, web_workers, **options):
        # migrate wrote them already; idempotent, so the worker never starts without its schedules
        scheduled = schedules_ensure()
        python = sys.executable
        web = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                python,
                "-m",
                "gunicorn",
                "portal.wsgi:application",
                "--bind",
                bind,
                "--workers",
                str(web_workers),
                "--access-logfile",
                "-",
            ],
            start_new_session=True,
        )
        # Each child in its own process group: Ctrl-C reaches this command alone, which stops each child with
        # one SIGTERM. Signalled by the terminal as well, django-q2's cluster took two signals and exited
        # before its worker processes, which lived on.
        worker = subprocess.Popen([python, "manage.py", "qcluster"], cwd=settings.BASE_DIR, start_new_session=True)  # noqa: S603
        self.stdout.write(f"The portal runs at http://{bind}/ (admin at http://{bind}/admin/). Ctrl-C stops it.")
        self.stdout.write(f"The worker runs {scheduled} schedules (admin: Tasks > Scheduled tasks).")
        children = [web, worker]

        def stop(signum, frame):
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        with contextlib.suppress(ChildProcessError):
            os.wait()  # either child ending stops the other
        stop(None, None)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # whatever is left of its group
