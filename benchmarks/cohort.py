#!/usr/bin/env python
"""Cohort intake benchmark: a Mixpanel cohort sync of 10 pages x 1,000 members against gunicorn + PostgreSQL.

Starts gunicorn (``gunicorn.conf.py``, production settings) on a throwaway PostgreSQL database, makes a project
and a cohort intake with the operator commands (``mixpanel_project add``, ``cohort_intake add --json``), then
posts as Mixpanel does (mixpanel_sandbox/cohort_sync.py: one session id, ``page_count`` from 1, Basic auth, one
page after the other):

1. the sync: ``--pages`` pages of ``--members`` new members each; every page's answer time is measured;
2. the same session again (Mixpanel retrying after a failure): every page is answered, nothing is created;
3. the same members in a new session (the next scheduled sync sends them again): nothing is created.

Before the timing, a few empty ``remove_members`` messages warm the web processes up (code loaded, password
checked once), as a running installation's are.

It prints the answer time per page (p50, p99, max), requests created per second, the creations of the two
resends, and PASS/MISS for the targets: p99 < 2 s, every page answered success, 0 created by the resends.

    .venv/bin/python benchmarks/cohort.py
    .venv/bin/python benchmarks/cohort.py --pages 3 --strict
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from intake import (  # noqa: E402 - benchmarks/ goes on the path first (scripts, not a package)
    BIN,
    admin_sql,
    count_requests,
    database_urls,
    flush_redis,
    free_port,
    server_environment,
    wait_until_up,
)

from mixpanel_sandbox.cohort_sync import build_pages, post_pages, sandbox_members  # noqa: E402

TARGET_P99_SECONDS = 2.0
PROJECT_ID = "424242"
WARMUP_MESSAGES = 6


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def post_all(url: str, credentials: dict, pages: list[dict]) -> tuple[list[float], list[str]]:
    """(answer time of each page in seconds, a description of each page not answered success)."""
    times, failures = [], []
    for result in post_pages(
        url=url, username=credentials["username"], password=credentials["password"], pages=pages, timeout=60
    ):
        times.append(result.seconds)
        expected = {"action": pages[0]["action"], "status": "success"}
        if result.status != 200 or result.body != expected:
            failures.append(f"page {result.page}: HTTP {result.status} {result.body}")
    return times, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--members", type=int, default=1000, help="members per page (Mixpanel sends up to 1000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker (default: gunicorn.conf.py's)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server to create the throwaway database on (its name is replaced)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6"),
        help="broker and cache for the run; this Redis database is FLUSHED at the end",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.threads is None:
        args.threads = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"]
    load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())

    name = f"dsr_bench_cohort_{os.getpid()}"
    database_url, maintenance_url = database_urls(args.database_url, name)
    port = free_port()
    server: subprocess.Popen | None = None
    with tempfile.TemporaryDirectory(prefix="dsr-bench-cohort-") as tmp_name:
        tmp = Path(tmp_name)
        env = server_environment(args, database_url, tmp, port)
        env["SITE_URL"] = f"http://127.0.0.1:{port}"
        admin_sql(maintenance_url, f'CREATE DATABASE "{name}"')
        try:
            print(f"Preparing database {name}, static files, a project and a cohort intake ...", flush=True)
            for command in (["migrate", "--noinput", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
                manage(env, *command)
            manage(
                env,
                "mixpanel_project",
                "add",
                "--name",
                "Bench",
                "--project-id",
                PROJECT_ID,
                "--token",
                "benchtoken",
                "--oauth-token",
                "bench-oauth",
                "--token-expires",
                "2030-01-01",
                "--residency",
                "us",
            )
            credentials = json.loads(
                manage(
                    env,
                    "cohort_intake",
                    "add",
                    "--project",
                    "Bench",
                    "--kind",
                    "deletion",
                    "--regulation",
                    "gdpr",
                    "--json",
                )
            )
            log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115 - closed after the server stops
            server = subprocess.Popen(
                [str(BIN / "gunicorn"), "compliance.wsgi", "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_until_up(port, server)
            url = credentials["webhook_url"]
            # A running installation's web processes are warm (Mixpanel syncs every 30 minutes): a few empty
            # `remove_members` messages, each on its own connection, load the code and check the password once
            # (the verdict is shared through the cache) before anything is timed.
            print(f"warm-up: {WARMUP_MESSAGES} empty messages ...", flush=True)
            for _ in range(WARMUP_MESSAGES):
                warm = build_pages(members=[], project_id=PROJECT_ID, action="remove_members")
                _times, warm_failures = post_all(url, credentials, warm)
                if warm_failures:
                    raise RuntimeError(f"warm-up refused: {warm_failures}")
            members = sandbox_members(args.pages * args.members, prefix=f"bench-{uuid.uuid4().hex[:6]}-")
            session = uuid.uuid4().hex
            pages = build_pages(members=members, project_id=PROJECT_ID, session_id=session, page_size=args.members)

            print(f"sync: {len(pages)} pages x {args.members} members ...", flush=True)
            started = time.perf_counter()
            times, failures = post_all(url, credentials, pages)
            elapsed = time.perf_counter() - started
            created = count_requests(database_url)

            print("the same session again ...", flush=True)
            resend_times, resend_failures = post_all(url, credentials, pages)
            after_resend = count_requests(database_url)

            print("the same members in a new session ...", flush=True)
            new_session = build_pages(members=members, project_id=PROJECT_ID, page_size=args.members)
            again_times, again_failures = post_all(url, credentials, new_session)
            after_again = count_requests(database_url)
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

    p99 = percentile(times, 99)
    all_failures = failures + resend_failures + again_failures
    print()
    print(
        f"Cohort intake benchmark: gunicorn {args.workers} workers x {args.threads} thread(s), production settings, "
        f"PostgreSQL and Redis on loopback; {len(pages)} pages x {args.members} members posted one after another "
        f"as Mixpanel does; {os.cpu_count()} CPUs, load average before the run {load_before}."
    )
    print()
    print(f"{'pass':<28}{'pages':>6}{'p50 s':>8}{'p99 s':>8}{'max s':>8}{'created':>9}")
    for label, values, made in (
        ("sync (new members)", times, created),
        ("same session again", resend_times, after_resend - created),
        ("same members, new session", again_times, after_again - after_resend),
    ):
        print(
            f"{label:<28}{len(values):>6}{percentile(values, 50):>8.3f}{percentile(values, 99):>8.3f}"
            f"{max(values, default=float('nan')):>8.3f}{made:>9}"
        )
    print(f"  requests created per second during the sync: {created / elapsed:.0f} ({created} in {elapsed:.2f} s)")
    for failure in all_failures:
        print(f"  not success: {failure}")
    print()
    checks = [
        (f"page answer p99 = {p99:.3f} s", p99 < TARGET_P99_SECONDS, f"< {TARGET_P99_SECONDS:.0f} s"),
        (
            f"requests created = {created}",
            created == len(members),
            f"{len(members)}, one per member",
        ),
        (
            f"created by the resends = {after_again - created}",
            after_again == created,
            "0",
        ),
        (f"pages not answered success = {len(all_failures)}", not all_failures, "0"),
    ]
    passed = True
    for text, ok, target in checks:
        passed &= ok
        print(f"{'PASS' if ok else 'MISS'}  {text}  (target {target})")
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
