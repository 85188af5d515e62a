"""JUnit ingestion benchmark: POST /api/v1/reports/junit/ against a parse-only baseline of the same file.

Run it with `make bench-junit` (or `scripts/with-postgres.sh .venv/bin/python bench/junit.py`), which
gives it a throwaway PostgreSQL through DATABASE_URL. It migrates that database, creates an ingest
token and generates JUnit files of 20,000 and 200,000 test cases (2 % failing, each failing test a
distinct failure). For each file, in one run, a fresh child process measures:

- parse-only: the portal's streaming parser (defusedxml iterparse) reading every test case, no database;
- ingestion: the whole request through Django's WSGI handler (middleware, token, view, parse, bulk
  insert, failures, receipt), the body streamed from the file as a server streams it from its socket.

Parse-only and ingestion take turns, ``--rounds`` times per size (default 5; each round a new run, since
the same upload is stored once). It prints test cases per second, each round's ingestion time against its
parse-only time and their median, and each child's peak memory growth (peak RSS after minus RSS before the
measured step). Goals: at least 20,000 test cases/s, ingestion within 3x parse-only (the median over the
rounds), peak memory growth under 100 MB and not growing with the file size.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
SIZES = (20_000, 200_000)
FAIL_EVERY = 50  # 2 %
SUITE_SIZE = 500
GOAL_RATE, GOAL_RATIO, GOAL_MB = 20_000, 3.0, 100.0


def generate(path: Path, cases: int) -> None:
    """A pytest-like report: suites of 500 cases, every 50th failing with a short traceback."""
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n')
        for start in range(0, cases, SUITE_SIZE):
            suite = start // SUITE_SIZE
            count = min(SUITE_SIZE, cases - start)
            out.write(f'  <testsuite name="pytest" tests="{count}" hostname="bench">\n')
            for i in range(start, start + count):
                module = f"tests.pkg{suite}.test_module{i % 20}"
                head = f'    <testcase classname="{module}" name="test_case_{i}" file="{module}.py" time="0.004"'
                if i % FAIL_EVERY == 0:
                    out.write(f'{head}>\n      <failure message="AssertionError: assert {i} == {i + 1}">'
                              f"def test_case_{i}():\n&gt;       assert {i} == {i + 1}\nE       AssertionError"
                              "</failure>\n    </testcase>\n")  # fmt: skip
                else:
                    out.write(f"{head}/>\n")
            out.write("  </testsuite>\n")
        out.write("</testsuites>\n")


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("PORTAL_LOG_LEVEL", "WARNING")
    import django

    django.setup()


def _rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child_parse(path: Path) -> dict:
    _django()
    from escalation.services.reports.junit import junit_cases

    before = _rss_kb()
    started = time.perf_counter()
    with path.open("rb") as file:
        cases = sum(1 for _ in junit_cases(file))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"cases": cases, "seconds": seconds, "growth_mb": max(0, peak - before) / 1024}


def child_ingest(path: Path, token: str, repository: str) -> dict:
    _django()
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    size = path.stat().st_size
    query = f"repository={repository}&branch=main&commit=c0ffee&run_id=1&job=unit-tests"

    def call(body_path: Path, length: int, extra_query: str = "") -> tuple[str, bytes]:
        answer: dict = {}

        def start_response(status, headers, exc_info=None):
            answer["status"] = status

        with body_path.open("rb") as body:
            environ = {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": "/api/v1/reports/junit/",
                "QUERY_STRING": query + extra_query,
                "CONTENT_TYPE": "application/xml",
                "CONTENT_LENGTH": str(length),
                "SERVER_NAME": "localhost",
                "SERVER_PORT": "80",
                "HTTP_HOST": "localhost",
                "HTTP_AUTHORIZATION": f"Bearer {token}",
                "wsgi.input": body,
                "wsgi.url_scheme": "http",
                "wsgi.errors": sys.stderr,
                "wsgi.version": (1, 0),
                "wsgi.multithread": False,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            response = handler(environ, start_response)
            content = b"".join(response)
        return answer["status"], content

    warmup = path.with_suffix(".warmup.xml")
    generate(warmup, 100)
    status, content = call(warmup, warmup.stat().st_size, "&attempt=99")  # loads code, warms caches
    assert status.startswith("201"), content
    before = _rss_kb()
    started = time.perf_counter()
    status, content = call(path, size)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert status.startswith("201"), content[:500]
    receipt = json.loads(content)
    return {
        "cases": receipt["tests"],
        "seconds": seconds,
        "growth_mb": max(0, peak - before) / 1024,
        "failures_opened": len(receipt["failures_opened"]),
    }


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)  # noqa: S603
    if out.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["parse", "ingest"])
    parser.add_argument("--file")
    parser.add_argument("--token")
    parser.add_argument("--repository")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=5, help="parse and ingestion runs per size, alternating")
    args = parser.parse_args()
    if args.child == "parse":
        print(json.dumps(child_parse(Path(args.file))))
        return 0
    if args.child == "ingest":
        print(json.dumps(child_ingest(Path(args.file), args.token, args.repository)))
        return 0

    _django()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from escalation.services.sources import source_create
    from portal.audit import Actor

    if connection.vendor != "postgresql":
        print("warning: not PostgreSQL; run through scripts/with-postgres.sh for the real figures", file=sys.stderr)
    call_command("migrate", verbosity=0)
    _, token = source_create(name=f"bench-junit-{os.getpid()}", actor=Actor.task("bench"), now=timezone.now())
    connection.close()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-junit-") as tmp:
        for cases in args.sizes:
            path = Path(tmp) / f"junit-{cases}.xml"
            generate(path, cases)
            for round_ in range(1, args.rounds + 1):  # parse and ingestion take turns: the machine's speed drifts
                parse = run_child("--child", "parse", "--file", str(path))
                repository = f"bench/junit-{cases}-{round_}"  # a new run each round: the same upload is stored once
                ingest = run_child(
                    "--child", "ingest", "--file", str(path), "--token", token, "--repository", repository
                )
                rows.append((cases, path.stat().st_size, parse, ingest))
    return report(rows)


def report(rows: list) -> int:
    print(f"{'cases':>8} {'MB':>6} | {'parse s':>8} {'parse/s':>9} {'peak+MB':>8} | "
          f"{'ingest s':>8} {'ingest/s':>9} {'peak+MB':>8} | {'ratio':>5} {'failures':>8}")  # fmt: skip
    ok = True
    for cases, size, parse, ingest in rows:
        ratio = ingest["seconds"] / parse["seconds"]
        rate = ingest["cases"] / ingest["seconds"]
        print(
            f"{cases:>8} {size / 1e6:>6.1f} | {parse['seconds']:>8.2f} {parse['cases'] / parse['seconds']:>9.0f} "
            f"{parse['growth_mb']:>8.1f} | {ingest['seconds']:>8.2f} {rate:>9.0f} {ingest['growth_mb']:>8.1f} | "
            f"{ratio:>5.2f} {ingest['failures_opened']:>8}"
        )
        ok &= rate >= GOAL_RATE and ingest["growth_mb"] < GOAL_MB
    for cases in sorted({row[0] for row in rows}):
        ratios = [ingest["seconds"] / parse["seconds"] for n, _, parse, ingest in rows if n == cases]
        median = statistics.median(ratios)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(f"{cases:>8} cases: ratio median {median:.2f} over {len(ratios)} rounds ({spread})")
        ok &= median <= GOAL_RATIO
    growths = [ingest["growth_mb"] for *_, ingest in rows]
    flat = len(growths) < 2 or growths[-1] <= max(growths[0] * 1.5, growths[0] + 10)
    print(f"goals: >= {GOAL_RATE} cases/s, ingestion <= {GOAL_RATIO}x parse-only, peak growth < {GOAL_MB} MB and "
          f"not growing with the file: {'met' if ok and flat else 'NOT met'}")  # fmt: skip
    return 0 if ok and flat else 1


if __name__ == "__main__":
    sys.exit(main())
