#!/usr/bin/env python
"""Intake benchmark: the public request form against a bare Django view, on the same server in the same run.

Starts gunicorn (``gunicorn.conf.py``: 2 workers, threads as configured there) with production settings on a
throwaway PostgreSQL database on loopback, then drives it with a Python load generator: ``--concurrency``
client threads, each with its own connection per request, for ``--duration`` seconds per phase after a short
warm-up:

1. ``GET /bench/bare/``: a view that returns "ok" through the full middleware stack (benchmarks/bench_urls.py,
   served only under ``DJANGO_SETTINGS_MODULE=benchmarks.bench_settings``);
2. ``POST /bench/floor/``: a reference, not a target: the same CSRF check and form validation as the public
   form, then one INSERT and COMMIT of a row without personal data. No durable intake can cost less, so its
   rate is the ceiling for the real form on this machine;
3. ``POST /request/``: the public form with a valid CSRF cookie and token (one GET per client first), a new
   email address each time; every success is a new request row, its audit event and a queued email task.

It prints requests/s, p50/p95/p99 latency and errors for each phase, the throughput ratios and the targets
(form >= 0.5 x bare, form p99 < 250 ms, 0 errors). The public rate limits are turned off for the run
(``DSR_PUBLIC_RATE_LIMITS_ENABLED=false``): one client address sending hundreds of requests a second would
otherwise be answered with our own 429s. The database is created and dropped by the script; Celery messages
go to the Redis database given (flushed at the end), and no worker runs.

    .venv/bin/python benchmarks/intake.py                    # 30 s per phase, 16 clients
    .venv/bin/python benchmarks/intake.py --duration 10 --concurrency 8
    GUNICORN_THREADS=1 .venv/bin/python benchmarks/intake.py # sync workers instead of threaded ones
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import runpy
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WARMUP_SECONDS = 3.0
CLIENT_TIMEOUT_SECONDS = 10.0
TARGET_RATIO = 0.5
TARGET_P99_MS = 250.0
FLOOR_TABLE = "bench_floor"  # benchmarks/bench_urls.py writes it

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
CSRF_COOKIE = re.compile(r"csrftoken=([^;]+)")


@dataclass
class PhaseResult:
    name: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the load generator -------------------------------------------------------------------------------
class Client:
    """One simulated visitor: its own CSRF cookie and token, one connection per request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""
        self.token = ""

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_SECONDS)
        try:
            conn.request(method, path, body=body, headers={"Host": "127.0.0.1", **(headers or {})})
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def fetch_csrf(self) -> None:
        status, headers, body = self.send("GET", "/request/")
        if status != 200:
            raise RuntimeError(f"GET /request/ answered {status}")
        cookies = [value for name, value in headers if name.lower() == "set-cookie"]
        cookie = next((m.group(1) for c in cookies if (m := CSRF_COOKIE.search(c))), "")
        token = CSRF_INPUT.search(body.decode())
        if not cookie or not token:
            raise RuntimeError("the form page carried no CSRF cookie or token")
        self.cookie, self.token = cookie, token.group(1)

    def bare(self) -> int:
        status, _headers, _body = self.send("GET", "/bench/bare/")
        return 0 if status == 200 else status

    def submit(self, path: str = "/request/") -> int:
        fields = {
            "csrfmiddlewaretoken": self.token,
            "name": "Bench Person",
            "email": f"bench-{uuid.uuid4().hex[:16]}@example.org",
            "kind": "deletion",
            "residence": "eea_uk",
            "distinct_ids": f"bench-{uuid.uuid4().hex[:12]}",
            "message": "",
            "website": "",
        }
        status, headers, _body = self.send(
            "POST",
            path,
            body=urlencode(fields).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={self.cookie}"},
        )
        location = dict((k.lower(), v) for k, v in headers).get("location", "")
        return 0 if status == 302 and location.endswith("/request/sent/") else status

    def floor(self) -> int:
        return self.submit("/bench/floor/")


def run_phase(name: str, port: int, action: str, *, duration: float, concurrency: int) -> PhaseResult:
    """``concurrency`` threads call ``action`` back to back; only calls started after the warm-up count."""
    clients = [Client(port) for _ in range(concurrency)]
    if action in {"submit", "floor"}:
        for client in clients:
            client.fetch_csrf()
    start = time.perf_counter()
    measure_from = start + WARMUP_SECONDS
    stop_at = measure_from + duration
    result = PhaseResult(name, duration)
    lock = threading.Lock()

    def work(client: Client) -> None:
        call = getattr(client, action)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        while (began := time.perf_counter()) < stop_at:
            try:
                status = call()
                error = str(status) if status else ""
            except Exception as exc:  # a refused or timed-out connection is an error, not a crash
                error = type(exc).__name__
            ended = time.perf_counter()
            if began < measure_from:
                continue
            if error:
                errors[error] = errors.get(error, 0) + 1
            else:
                latencies.append((ended - began) * 1000)
        with lock:
            result.latencies_ms.extend(latencies)
            for key, count in errors.items():
                result.errors[key] = result.errors.get(key, 0) + count

    threads = [threading.Thread(target=work, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


# --- the server under test ----------------------------------------------------------------------------
def database_urls(base: str, name: str) -> tuple[str, str]:
    """(the URL of the throwaway database, the URL of the maintenance database used to create it)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}")), urlunsplit(parts._replace(path="/postgres"))


def admin_sql(maintenance_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(statement)


def server_environment(args: argparse.Namespace, database_url: str, tmp: Path, port: int) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.bench_settings",
        DJANGO_ENV="production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        AUDIT_CHAIN_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1",
        # Plain HTTP on loopback: no redirect to HTTPS (production would sit behind a TLS proxy).
        SECURE_SSL_REDIRECT="false",
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        VAR_DIR=str(tmp / "var"),
        EXPORTS_DIR=str(tmp / "exports"),
        BENCH_STATIC_ROOT=str(tmp / "static"),
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        DSR_PUBLIC_RATE_LIMITS_ENABLED="false",
        MIXPANEL_SANDBOX_ENABLED="false",
        WEB_CONCURRENCY=str(args.workers),
        GUNICORN_THREADS=str(args.threads),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        LOG_LEVEL="WARNING",
        GUNICORN_LOG_LEVEL="warning",
    )
    return env


def wait_until_up(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            status, _h, _b = Client(port).send("GET", "/readyz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not become ready")


def count_requests(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM gdpr_requests_datasubjectrequest").fetchone()[0]


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


# --- report -------------------------------------------------------------------------------------------
def report(phases: dict[str, PhaseResult], args: argparse.Namespace, created: int) -> bool:
    def row(r: PhaseResult) -> str:
        return (
            f"{r.name:<22}{r.ok:>9}{r.rate:>10.1f}{r.percentile(50):>9.1f}{r.percentile(95):>9.1f}"
            f"{r.percentile(99):>9.1f}{r.error_count:>8}"
        )

    bare, floor, form = phases["bare"], phases["floor"], phases["form"]
    ratio = form.rate / bare.rate if bare.rate else 0.0
    p99 = form.percentile(99)
    errors = sum(r.error_count for r in phases.values())
    checks = [
        (f"form throughput / bare throughput = {ratio:.2f}", ratio >= TARGET_RATIO, f">= {TARGET_RATIO}"),
        (f"form p99 latency = {p99:.1f} ms", p99 < TARGET_P99_MS, f"< {TARGET_P99_MS:.0f} ms"),
        (f"errors = {errors}", errors == 0, "0"),
    ]
    print()
    print(
        f"Intake benchmark: gunicorn {args.workers} workers x {args.threads} thread(s) (gunicorn.conf.py), "
        "production settings, "
        f"PostgreSQL and Redis on loopback; {args.concurrency} concurrent clients, {args.duration:.0f} s per phase "
        f"after {WARMUP_SECONDS:.0f} s warm-up; load generator on the same machine ({os.cpu_count()} CPUs)."
    )
    print(f"Load average before the run (other work on this machine skews the figures): {args.load_before}")
    print(
        "Public rate limits: OFF for this run (DSR_PUBLIC_RATE_LIMITS_ENABLED=false), so none of our own 429s; "
        "in production they stay on."
    )
    print()
    print(f"{'phase':<22}{'requests':>9}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in phases.values():
        print(row(r))
    for r in phases.values():
        if r.errors:
            print(f"  {r.name} errors by status: {dict(sorted(r.errors.items()))}")
    print(f"  requests in the database after the run (incl. warm-up): {created}")
    floor_ratio = floor.rate / bare.rate if bare.rate else 0.0
    form_of_floor = form.rate / floor.rate if floor.rate else 0.0
    print(
        f"  reference: floor / bare = {floor_ratio:.2f} (form validation + one INSERT and COMMIT, the most any "
        f"durable form reaches here); form / floor = {form_of_floor:.2f}"
    )
    print()
    passed = True
    for text, ok, target in checks:
        passed &= ok
        print(f"{'PASS' if ok else 'MISS'}  {text}  (target {target})")
    return passed


def create_floor_table(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {FLOOR_TABLE} (id bigserial PRIMARY KEY, email_hash text NOT NULL)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase (default 30)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads per worker (default: gunicorn.conf.py's; 1 = sync workers)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server to create the throwaway database on (its name is replaced)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"),
        help="broker and cache for the run; this Redis database is FLUSHED at the end",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.threads is None:  # what gunicorn.conf.py makes of this environment
        args.threads = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"]
    args.load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())

    name = f"dsr_bench_{os.getpid()}"
    database_url, maintenance_url = database_urls(args.database_url, name)
    port = free_port()
    server: subprocess.Popen | None = None
    with tempfile.TemporaryDirectory(prefix="dsr-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = server_environment(args, database_url, tmp, port)
        admin_sql(maintenance_url, f'CREATE DATABASE "{name}"')
        try:
            print(f"Preparing database {name} and static files ...", flush=True)
            for command in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
                subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
            log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115 - closed after the server stops
            server = subprocess.Popen(
                [str(BIN / "gunicorn"), "compliance.wsgi", "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_until_up(port, server)
            create_floor_table(database_url)
            phases: dict[str, PhaseResult] = {}
            for key, name, action in (
                ("bare", "bare view (GET)", "bare"),
                ("floor", "floor: 1 INSERT (POST)", "floor"),
                ("form", "request form (POST)", "submit"),
            ):
                print(f"{name} ...", flush=True)
                phases[key] = run_phase(name, port, action, duration=args.duration, concurrency=args.concurrency)
            created = count_requests(database_url)
            passed = report(phases, args, created)
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
                log.close()
            admin_sql(maintenance_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            flush_redis(args.redis_url)
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
