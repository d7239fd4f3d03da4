#!/usr/bin/env python
"""REST API benchmark: ``POST /api/v1/requests/`` and ``GET /api/v1/requests/{reference}/`` against the public
web form, on the same gunicorn server in the same run.

The server is the one benchmarks/intake.py starts (gunicorn.conf.py, production settings, a throwaway
PostgreSQL database on loopback, Redis for cache and broker, no Celery worker); this script reuses its pieces.
Phases, each ``--concurrency`` clients for ``--duration`` seconds after a warm-up:

1. ``GET /bench/bare/``: a view that returns "ok" through the whole middleware stack (benchmarks/bench_urls.py),
   the floor of this machine: no request through this server can be answered faster;
2. ``POST /request/``: the web form (CSRF cookie and token, a new address each time), the reference figure;
3. ``POST /api/v1/requests/``: a new request per call with an Idempotency-Key and an external id, Bearer key;
4. ``GET /api/v1/requests/{reference}/``: the references phase 3 created, read back at random.

The API key's rate limit is lifted for the run (``API_RATE_LIMIT``): one key sending hundreds of requests a
second would otherwise get our own 429s. Prints requests/s, p50/p95/p99 and errors; targets: API p99 < 250 ms,
0 errors.

    .venv/bin/python benchmarks/api.py                         # 30 s per phase, 16 clients
    .venv/bin/python benchmarks/api.py --duration 10 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ are scripts, not a package

from intake import (
    BIN,
    ROOT,
    TARGET_P99_MS,
    WARMUP_SECONDS,
    Client,
    PhaseResult,
    admin_sql,
    count_requests,
    database_urls,
    flush_redis,
    free_port,
    server_environment,
    wait_until_up,
)

SCOPES = ("--scope", "requests:write", "--scope", "requests:read")


class ApiClient(Client):
    """One caller of the API: the shared key, one connection per request."""

    def __init__(self, port: int, key: str, references: list[str]) -> None:
        super().__init__(port)
        self.key = key
        self.references = references

    def create(self) -> int:
        body = {
            "kind": "deletion",
            "regulation": "gdpr",
            "email": f"bench-{uuid.uuid4().hex[:16]}@example.org",
            "distinct_ids": [f"bench-{uuid.uuid4().hex[:12]}"],
            "external_id": uuid.uuid4().hex,
        }
        status, _headers, data = self.send(
            "POST",
            "/api/v1/requests/",
            body=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.key}",
                "Idempotency-Key": uuid.uuid4().hex,
            },
        )
        if status != 201:
            return status
        self.references.append(json.loads(data)["reference"])
        return 0

    def read(self) -> int:
        reference = random.choice(self.references)
        status, _headers, _data = self.send(
            "GET", f"/api/v1/requests/{reference}/", headers={"Authorization": f"Bearer {self.key}"}
        )
        return 0 if status == 200 else status


def run_phase(name: str, clients: list[Client], action: str, *, duration: float) -> PhaseResult:
    """Each client calls ``action`` back to back in its own thread; calls started after the warm-up count."""
    start = time.perf_counter()
    measure_from, stop_at = start + WARMUP_SECONDS, start + WARMUP_SECONDS + duration
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


def report(phases: dict[str, PhaseResult], args: argparse.Namespace, created: int) -> bool:
    print()
    print(
        f"API benchmark: gunicorn {args.workers} workers x {args.threads} thread(s), production settings, "
        f"PostgreSQL and Redis on loopback; {args.concurrency} concurrent clients, {args.duration:.0f} s per phase "
        f"after {WARMUP_SECONDS:.0f} s warm-up; load generator on the same machine ({os.cpu_count()} CPUs)."
    )
    print(f"Load average before the run: {args.load_before}")
    print(f"Worker recycling (max_requests): {'off' if args.no_recycling else 'as gunicorn.conf.py says'}")
    print()
    print(f"{'phase':<30}{'requests':>9}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in phases.values():
        print(
            f"{r.name:<30}{r.ok:>9}{r.rate:>10.1f}{r.percentile(50):>9.1f}{r.percentile(95):>9.1f}"
            f"{r.percentile(99):>9.1f}{r.error_count:>8}"
        )
        if r.errors:
            print(f"  {r.name} errors by status: {dict(sorted(r.errors.items()))}")
    print(f"  requests in the database after the run (incl. warm-up): {created}")
    bare, form, create, read = phases["bare"], phases["form"], phases["create"], phases["read"]
    print(f"  API create / web form throughput = {create.rate / form.rate if form.rate else 0:.2f}")
    print(
        "  throughput / bare view: "
        + ", ".join(
            f"{r.name.split(' (')[0]} {r.rate / bare.rate if bare.rate else 0:.2f}" for r in (form, create, read)
        )
    )
    print()
    passed = True
    for key in ("create", "read"):
        p99 = phases[key].percentile(99)
        ok = p99 < TARGET_P99_MS
        passed &= ok
        print(f"{'PASS' if ok else 'MISS'}  {phases[key].name} p99 = {p99:.1f} ms  (target < {TARGET_P99_MS:.0f} ms)")
    errors = sum(r.error_count for r in phases.values())
    passed &= errors == 0
    print(f"{'PASS' if errors == 0 else 'MISS'}  errors = {errors}  (target 0)")
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="threads per worker (default: gunicorn.conf.py's)")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"),
        help="broker and cache for the run; this Redis database is FLUSHED at the end",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--no-recycling",
        action="store_true",
        help="gunicorn --max-requests 0: no worker restarts during the run (gunicorn.conf.py recycles every ~2000)",
    )
    args = parser.parse_args()
    if args.threads is None:
        args.threads = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"]
    args.load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())

    name = f"dsr_api_bench_{os.getpid()}"
    database_url, maintenance_url = database_urls(args.database_url, name)
    port = free_port()
    server: subprocess.Popen | None = None
    with tempfile.TemporaryDirectory(prefix="dsr-api-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = server_environment(args, database_url, tmp, port)
        env["API_RATE_LIMIT"] = "1000000/min"
        admin_sql(maintenance_url, f'CREATE DATABASE "{name}"')
        try:
            print(f"Preparing database {name}, static files and an API key ...", flush=True)
            for command in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
                subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
            made = subprocess.run(
                [sys.executable, "manage.py", "api_key", "create", "--name", "bench", "--json", *SCOPES],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            key = json.loads(made.stdout)["key"]
            log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115 - closed after the server stops
            server = subprocess.Popen(
                [str(BIN / "gunicorn"), "compliance.wsgi", "-c", "gunicorn.conf.py"]
                + (["--max-requests", "0"] if args.no_recycling else []),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_until_up(port, server)
            references: list[str] = []
            form_clients = [Client(port) for _ in range(args.concurrency)]
            for client in form_clients:
                client.fetch_csrf()
            api_clients: list[Client] = [ApiClient(port, key, references) for _ in range(args.concurrency)]
            phases: dict[str, PhaseResult] = {}
            for phase, label, clients, action in (
                ("bare", "bare view (GET /bench/bare/)", form_clients, "bare"),
                ("form", "web form (POST /request/)", form_clients, "submit"),
                ("create", "API create (POST)", api_clients, "create"),
                ("read", "API read by reference (GET)", api_clients, "read"),
            ):
                print(f"{label} ...", flush=True)
                phases[phase] = run_phase(label, clients, action, duration=args.duration)
            passed = report(phases, args, count_requests(database_url))
            if any(r.errors for r in phases.values()):
                log.flush()
                tail = (tmp / "gunicorn.log").read_text(errors="replace").splitlines()[-15:]
                print("gunicorn log, last lines:", *tail, sep="\n  ")
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
