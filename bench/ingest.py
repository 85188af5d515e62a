"""Ingestion benchmark: `POST /api/v1/events/` against a bare endpoint, under gunicorn and PostgreSQL.

Run it with `make bench-ingest` (or `scripts/with-postgres.sh .venv/bin/python bench/ingest.py`), which
gives it a throwaway PostgreSQL through DATABASE_URL. It migrates that database, creates an ingest
token, starts gunicorn (2 sync workers) on a free loopback port with bench.settings, warms up, then
drives each endpoint with wrk for a fixed time in alternating rounds (bench/ingest.lua: new failures,
repeats, recoveries and passes, as --mix says) and prints events/s, p50/p99 latency and the
ingestion/bare ratio. Goal: ingestion at least 50 % of the bare rate, p99 under 100 ms, at the realistic
mix. In the same rounds it drives ingestion with a failure-heavy mix too (--stress-mix) and prints that
ratio next to it, without a goal. A run with non-2xx responses or socket errors says so and exits 1.
"""

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DIR = BASE_DIR / "bench"
LUA_SCRIPT = BENCH_DIR / "ingest.lua"
EVENTS_PATH = "/api/v1/events/"
BARE_PATH = "/bench/bare/"
RATIO_GOAL = 0.50
# New failures, repeats, recoveries, passes (bench/ingest.lua), in percent of the events sent.
# The realistic mix (README "Benchmarks" gives the figures it comes from): a fifth of the events are
# failing jobs, and half of the failures pass at the next run, so a failure fails twice on average,
# once new and once repeated, then recovers; the other events are passes.
DEFAULT_MIX = "10,10,10,70"
# The stress mix: every event a new failure, a repeat or a recovery, the costly kinds.
STRESS_MIX = "60,25,15,0"
P99_GOAL_MS = 100.0

# The bare endpoint's table (bench/bare.py inserts into it).
BARE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_bare_event (
    id bigserial PRIMARY KEY,
    source_id bigint NOT NULL,
    run_id varchar(200) NOT NULL,
    status varchar(16) NOT NULL,
    received_at timestamptz NOT NULL
)
"""

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class BenchError(Exception):
    pass


@dataclass
class WrkResult:
    label: str
    requests: int
    seconds: float
    latency_us: Counter  # microseconds -> requests that took them (from wrk's thousand quantiles)
    non_2xx: int
    socket_errors: int
    socket_detail: str
    mix: Counter  # new / repeat / recovery / pass -> requests
    cpu_seconds: dict[str, float | None] | None = None
    output: str = ""

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        """The latency below which p % of the requests finished, over every round."""
        rank, seen = self.latency_us.total() * p / 100, 0.0
        for value in sorted(self.latency_us):
            seen += self.latency_us[value]
            if seen >= rank:
                return value / 1000
        return 0.0

    def __add__(self, other: "WrkResult") -> "WrkResult":
        cpu = None
        if self.cpu_seconds is not None and other.cpu_seconds is not None:
            cpu = {
                key: None if self.cpu_seconds[key] is None else self.cpu_seconds[key] + other.cpu_seconds[key]
                for key in self.cpu_seconds
            }
        return WrkResult(
            label=self.label,
            requests=self.requests + other.requests,
            seconds=self.seconds + other.seconds,
            latency_us=self.latency_us + other.latency_us,
            non_2xx=self.non_2xx + other.non_2xx,
            socket_errors=self.socket_errors + other.socket_errors,
            socket_detail="; ".join(d for d in (self.socket_detail, other.socket_detail) if d != "none") or "none",
            mix=self.mix + other.mix,
            cpu_seconds=cpu,
            output=self.output + other.output,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="wrk duration per endpoint (default 20)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="slices each endpoint's time is run in, alternating (default 4)"
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per endpoint (default 3)")
    parser.add_argument(
        "--mix",
        default=DEFAULT_MIX,
        help=f"percent of new failures, repeats, recoveries and passes sent (default {DEFAULT_MIX})",
    )
    parser.add_argument(
        "--stress-mix",
        default=STRESS_MIX,
        help=f"the failure-heavy mix measured next to it, without a goal (default {STRESS_MIX}; 'none': skip)",
    )
    parser.add_argument("--check", action="store_true", help="also exit 1 when a goal is missed")
    args = parser.parse_args()
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    if args.stress_mix == "none":
        args.stress_mix = ""
    for option, mix in (("--mix", args.mix), ("--stress-mix", args.stress_mix)):
        if (mix or option == "--mix") and not valid_mix(mix):
            parser.error(f"{option} takes four whole percentages that add up to 100, e.g. {DEFAULT_MIX}")

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        print(
            "bench/ingest.py needs PostgreSQL in DATABASE_URL; run it with `make bench-ingest` or "
            "`scripts/with-postgres.sh .venv/bin/python bench/ingest.py`",
            file=sys.stderr,
        )
        return 2

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop gunicorn on the way out
    load_before = os.getloadavg()  # before our own work: says whether others were using the machine
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    env = bench_env(workdir)
    server = None
    try:
        manage(env, "migrate", "--noinput")
        token = manage(env, "create_ingest_token", "bench", "--scopes", "ingest").strip().splitlines()[-1]
        pg_version = prepare_database(database_url)

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = workdir / "gunicorn.log"
        server = start_gunicorn(env, port, args.workers, log_path)
        wait_healthy(server, base_url, log_path)

        wrk_args = dict(wrk=wrk, token=token, threads=args.threads, connections=args.connections, mix=args.mix)
        if args.warmup > 0:
            for path in (BARE_PATH, EVENTS_PATH):
                warm = run_wrk(**wrk_args, url=base_url + path, seconds=args.warmup, tag="warm", label=path)
                if warm.errors:
                    raise BenchError(f"the warm-up of {path} had errors:\n{warm.output}\n{tail(log_path)}")
        analyze(database_url)
        meter = CpuMeter(server.pid, database_url)
        measure = dict(wrk_args, meter=meter)
        mixes = {"ingestion": args.mix, "stress": args.stress_mix}
        results = run_rounds(measure, base_url, args.seconds, args.rounds, {k: v for k, v in mixes.items() if v})
        stored = stored_counts(database_url)
        load = (load_before, os.getloadavg())
        failed = [result for result in results.values() if result.errors]
        log_tail = tail(log_path) if failed else ""
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_gunicorn(server)
        shutil.rmtree(workdir, ignore_errors=True)

    goals_met = report(args, pg_version, results, stored, load)
    if failed:
        print("\n" + "!" * 78)
        print("!! ERRORS: the figures above are not valid.")
        for result in failed:
            print(
                f"!! {result.label}: {result.non_2xx} non-2xx responses, "
                f"{result.socket_errors} socket errors ({result.socket_detail})"
            )
        print("!" * 78)
        print(log_tail)
        return 1
    return 1 if args.check and not goals_met else 0


def valid_mix(mix: str) -> bool:
    """Whether ``mix`` is four whole percentages that add up to 100."""
    try:
        shares = [int(share) for share in mix.split(",")]
    except ValueError:
        return False
    return len(shares) == 4 and min(shares) >= 0 and sum(shares) == 100


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing; install it (`apt-get install wrk`) or run the benchmark as root")
    print("wrk is missing: installing it with apt-get", file=sys.stderr)
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=apt_env)
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    subprocess.run(install, check=True, env=apt_env, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed no wrk")
    return found


def bench_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-" + os.urandom(16).hex(),
        PORTAL_VAR_DIR=str(workdir / "var"),  # leave the checkout's var/ alone
        PYTHONPATH=os.pathsep.join(filter(None, [str(BASE_DIR), env.get("PYTHONPATH", "")])),
    )
    return env


def manage(env: dict[str, str], *command: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *command],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def prepare_database(database_url: str) -> str:
    """Create the bare endpoint's table; return the server's version."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(BARE_TABLE)
        return conn.execute("SHOW server_version").fetchone()[0]


def analyze(database_url: str) -> None:
    """Gather the statistics that autovacuum keeps on a running database. A fresh one has none, and the
    statements prepared during the warm-up would keep generic plans made for nearly empty tables (a
    sequential scan of the failures for every recovery) until autovacuum's first pass, after the run."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def stored_counts(database_url: str) -> tuple[dict[str, int], str]:
    import psycopg

    queries = {
        "events": "SELECT count(*) FROM escalation_cievent",
        "failures": "SELECT count(*) FROM escalation_failure",
        "open": "SELECT count(*) FROM escalation_failure WHERE status IN ('open', 'acknowledged')",
        "recovered": "SELECT count(*) FROM escalation_failure WHERE resolution = 'recovered'",
        "occurrences": "SELECT count(*) FROM escalation_failureoccurrence",
        "bare rows": "SELECT count(*) FROM bench_bare_event",
    }
    types_sql = "SELECT failure_type, count(*) FROM escalation_failure GROUP BY 1 ORDER BY 2 DESC, 1"
    with psycopg.connect(database_url) as conn:
        counts = {name: conn.execute(sql).fetchone()[0] for name, sql in queries.items()}
        types = ", ".join(f"{name} {count}" for name, count in conn.execute(types_sql))
    return counts, types


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict[str, str], port: int, workers: int, log_path: Path) -> subprocess.Popen:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [
        str(gunicorn) if gunicorn.exists() else "gunicorn",
        "portal.wsgi:application",
        "--workers", str(workers),
        "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}",
        "--chdir", str(BASE_DIR),
        "--log-level", "warning",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_healthy(server: subprocess.Popen, base_url: str, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"gunicorn exited with {server.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise BenchError(f"gunicorn did not answer /healthz within {timeout:.0f} s:\n{tail(log_path)}")


def stop_gunicorn(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()  # the master stops its workers gracefully
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # anything left of its process group
    server.wait()


def tail(path: Path, lines: int = 40) -> str:
    """The end of gunicorn's log, repeated messages counted once (timestamps stripped)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        message = re.sub(r"^\[?\d{4}-\d\d-\d\d[ T][\d:.,]+( [+-]\d{4}\])?\s*", "", line)
        counts[message] = counts.get(message, 0) + 1
    shown = [f"{n:>6} x {message}" if n > 1 else f"         {message}" for message, n in counts.items()]
    return "--- gunicorn log (end) ---\n" + "\n".join(shown[-lines:])


class CpuMeter:
    """CPU seconds used by gunicorn (master and workers), the PostgreSQL backends serving it, and wrk.

    CPU time, unlike wall time, says where the work goes even when other processes share the machine.
    The backends are only measured when PostgreSQL runs on this machine (their pids are in /proc).
    """

    def __init__(self, server_pid: int, database_url: str):
        self.server_pid = server_pid
        self.database_url = database_url
        self.local_db = re.search(r"@(127\.0\.0\.1|localhost|\[::1\])[:/]", database_url) is not None
        self.tick = os.sysconf("SC_CLK_TCK")

    def _cpu(self, pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def _processes(self, pids) -> dict[int, float]:
        return {pid: cpu for pid in pids if (cpu := self._cpu(pid)) is not None}

    def snapshot(self) -> dict:
        try:
            children = Path(f"/proc/{self.server_pid}/task/{self.server_pid}/children").read_text().split()
        except OSError:
            children = []
        backends = []
        if self.local_db:
            import psycopg

            sql = (
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            with psycopg.connect(self.database_url) as conn:
                backends = [row[0] for row in conn.execute(sql)]
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
        return {
            "gunicorn": self._processes([self.server_pid, *map(int, children)]),
            "postgres": self._processes(backends) if self.local_db else None,
            "wrk": usage.ru_utime + usage.ru_stime,
        }

    @staticmethod
    def used(before: dict, after: dict) -> dict[str, float | None]:
        def delta(name: str) -> float | None:
            if after[name] is None:
                return None
            return sum(cpu - before[name].get(pid, 0.0) for pid, cpu in after[name].items())

        wrk = after["wrk"] - before["wrk"]
        return {"gunicorn": delta("gunicorn"), "postgres": delta("postgres"), "wrk": wrk}


def run_rounds(measure: dict, base_url: str, seconds: int, rounds: int, mixes: dict[str, str]) -> dict[str, WrkResult]:
    """The bare endpoint and ingestion at each of ``mixes`` (label -> mix), each for `seconds` in all, in
    `rounds` alternating slices (bare, ingestion, stress, stress, ingestion, bare, ...): a virtual
    machine's speed drifts by tens of percent within a minute, and alternating gives every measure the
    same share of fast and slow moments."""
    slice_seconds = max(1, round(seconds / rounds))
    results: dict[str, WrkResult] = {}
    order = [("bare", BARE_PATH, measure["mix"]), *((label, EVENTS_PATH, mix) for label, mix in mixes.items())]
    for n in range(rounds):
        for label, path, mix in order if n % 2 == 0 else order[::-1]:
            wrk_args = dict(measure, mix=mix, seconds=slice_seconds, url=base_url + path, tag=f"{label}{n}")
            result = run_wrk(**wrk_args, label=label)
            results[label] = results[label] + result if label in results else result
    return results


def run_wrk(
    *,
    wrk: str,
    token: str,
    url: str,
    threads: int,
    connections: int,
    seconds: int,
    tag: str,
    label: str,
    mix: str = "",
    meter: CpuMeter | None = None,
) -> WrkResult:
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout", "10s",
        "--latency",
        "-s", str(LUA_SCRIPT),
        url,
        "--", token, tag, mix,
    ]  # fmt: skip
    before = meter.snapshot() if meter else None
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}) on {url}:\n{done.stdout}{done.stderr}")
    result = parse_wrk(label, done.stdout + done.stderr)
    if meter:
        result.cpu_seconds = meter.used(before, meter.snapshot())
    return result


def parse_wrk(label: str, output: str) -> WrkResult:
    def search(pattern: str) -> re.Match:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"no {pattern!r} in wrk's output:\n{output}")
        return match

    totals = search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
    socket_pattern = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    socket_match = re.search(socket_pattern, output)
    socket_errors = sum(int(n) for n in socket_match.groups()) if socket_match else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    mix = re.search(r"^Generated mix: (.*)$", output, re.MULTILINE)
    quantiles = [int(v) for v in search(r"^Latency quantiles: (.*)$")[1].split()]
    requests = int(totals[1])
    return WrkResult(
        label=label,
        requests=requests,
        seconds=float(totals[2]) * UNITS_MS[totals[3]] / 1000,
        latency_us=Counter({v: n * requests / len(quantiles) for v, n in Counter(quantiles).items()}),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=socket_errors,
        socket_detail=socket_match[0] if socket_match else "none",
        mix=Counter({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", mix[1])}) if mix else Counter(),
        output=re.sub(r"^Latency quantiles: .*\n?", "", output, flags=re.MULTILINE),
    )


def report(
    args,
    pg_version: str,
    results: dict[str, WrkResult],
    stored: tuple[dict[str, int], str],
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> bool:
    bare, events, stress = results["bare"], results["ingestion"], results.get("stress")
    cache = os.environ.get("PORTAL_CONFIG_CACHE_SECONDS", "5 (default)")
    print()
    print("Ingestion benchmark")
    print(
        f"  gunicorn: {args.workers} sync workers | wrk: {args.threads} threads, "
        f"{args.connections} connections, {args.seconds} s per measure in {args.rounds} alternating "
        f"rounds (warm-up {args.warmup} s)"
    )
    stress_mix = f" | stress mix {args.stress_mix}" if stress else ""
    print(f"  mix new,repeat,recovery,pass %: {args.mix}{stress_mix}")
    print(f"  PostgreSQL {pg_version} | PORTAL_CONFIG_CACHE_SECONDS={cache} | CPUs: {os.cpu_count()}")
    (before, after) = load
    print(f"  load average (1 min) before: {before[0]:.2f}, after: {after[0]:.2f}")
    if before[0] > (os.cpu_count() or 1) / 2:
        print("  WARNING: the machine was busy before the run started; the figures are not comparable")
    print()
    rows = [(events, f"POST {EVENTS_PATH}", "ingestion")]
    if stress:
        rows.append((stress, f"POST {EVENTS_PATH} (stress mix)", "ingestion, stress mix"))
    rows.append((bare, f"POST {BARE_PATH} (bare)", "bare"))
    header = f"  {'endpoint':<34}{'events/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'errors':>8}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for result, name, _ in rows:
        print(
            f"  {name:<34}{result.rate:>10.1f}{result.percentile_ms(50):>10.1f}{result.percentile_ms(99):>10.1f}"
            f"{result.requests:>10}{result.errors:>8}"
        )
    print()
    ratio = events.rate / bare.rate if bare.rate else 0.0
    ratio_ok = ratio >= RATIO_GOAL
    p99_ok = events.percentile_ms(99) < P99_GOAL_MS
    verdict = {True: "met", False: "NOT MET"}
    if any(result.errors for result in results.values()):
        verdict = {True: "not judged, the run had errors", False: "not judged, the run had errors"}
    print(f"  ratio ingestion/bare: {ratio:.1%}  (goal >= {RATIO_GOAL:.0%}: {verdict[ratio_ok]})")
    print(f"  ingestion p99: {events.percentile_ms(99):.1f} ms  (goal < {P99_GOAL_MS:.0f} ms: {verdict[p99_ok]})")
    if stress:
        stress_ratio = stress.rate / bare.rate if bare.rate else 0.0
        print(
            f"  ratio at the stress mix: {stress_ratio:.1%}, p99 {stress.percentile_ms(99):.1f} ms"
            " (no goal: every event a new failure, a repeat or a recovery)"
        )
    print()
    print(f"  {'CPU per request, ms':<34}{'gunicorn':>10}{'postgres':>10}{'wrk':>10}")
    for result, _, name in rows:
        cpu = result.cpu_seconds or {}
        cells = [
            "n/a" if cpu.get(key) is None else f"{1000 * cpu[key] / max(result.requests, 1):.2f}"
            for key in ("gunicorn", "postgres", "wrk")
        ]
        print(f"  {name:<34}" + "".join(f"{cell:>10}" for cell in cells))
    print()
    for result, _, name in rows[:-1]:
        print(f"  mix sent, {name}: " + (" ".join(f"{k}={v}" for k, v in result.mix.items()) or "unknown"))
    counts, types = stored
    print("  stored after all runs (warm-up included): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"  failures by type: {types}")
    return ratio_ok and p99_ok


if __name__ == "__main__":
    sys.exit(main())
