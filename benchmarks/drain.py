#!/usr/bin/env python
"""Drain benchmark: how many Mixpanel calls, how fast, and how evenly the pipeline works off a backlog.

Two scenarios, each from a fresh PostgreSQL database:
- deletions: 10,000 approved deletion requests with 2 distinct ids each (20,000 ids) on one project;
- access: 200 approved access requests on one project.

It starts real processes on loopback: the Mixpanel target (the app's own sandbox served by gunicorn, with
MIXPANEL_SANDBOX_STEP_SECONDS tiny; or ``--target fake``, the integration tests' recording fake), N
``celery worker`` processes and a ``celery beat``, all on Redis; approves everything first, then starts the
workers and waits until no request is left open. Calls are counted from the ApiCall rows the pipeline writes
(one per HTTP call) and, for the fake, from the server's own log as well. When the first create started
(``first_create_s``) and when the last request was planned (``last_planned_s``, its last TaskRequestLink row)
count from the workers' start, as the wall time does: they show whether Mixpanel calls wait for planning.

The floor is the fewest calls the contract allows: one create per batch (ceil(ids / batch size)) or per
retrieval, one status poll per task, and for retrievals one download each. The targets: calls <= 1.25 x
floor, never more than one call per second per project, no request left unfinished.

Usage (PostgreSQL and Redis on loopback; see benchmarks/README.md for timings):
    .venv/bin/python benchmarks/drain.py                      # both scenarios, the sandbox
    .venv/bin/python benchmarks/drain.py --scenario access --access 50 --json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent

CREATES = ("create_deletion", "create_retrieval")
POLLS = ("deletion_status", "retrieval_status")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("deletions", "access", "both"), default="both")
    parser.add_argument("--deletions", type=int, default=10_000, help="deletion requests (default 10000)")
    parser.add_argument("--ids-per-deletion", type=int, default=2)
    parser.add_argument("--access", type=int, default=200, help="access requests (default 200)")
    parser.add_argument("--batch-size", type=int, default=1999, help="the project's deletion batch size")
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes (concurrency 1 each)")
    parser.add_argument("--target", choices=("sandbox", "fake"), default="sandbox")
    parser.add_argument("--step-seconds", type=float, default=0.05, help="remote status step (sandbox or fake)")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="server URL, no db name")
    parser.add_argument("--database", default="drain_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds a scenario")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs afterwards")
    parser.add_argument("--json", action="store_true", help="print one JSON object per scenario")
    args = parser.parse_args()
    for name in ("deletions", "ids_per_deletion", "access", "batch_size", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 1 <= args.batch_size <= 2000:
        parser.error("--batch-size must be between 1 and 2000 (Mixpanel's limit)")
    for url in (args.postgres, args.redis_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error(f"{url}: the benchmark runs on loopback only")
    return args


# --- processes and services ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Processes:
    """Subprocesses in their own process groups, logs in files, all stopped at the end whatever happens."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.running.append((name, popen))
        return popen

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        popen = dict(self.running)[name]
        while marker not in self.log(name):
            if popen.poll() is not None:
                raise SystemExit(f"{name} exited with {popen.returncode}:\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start within {timeout:.0f}s:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)

    def stop_all(self) -> None:
        for _name, popen in self.running:  # warm shutdown: SIGTERM to the main process (STACK_NOTES.md)
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for _name, popen in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)
        self.running.clear()


def recreate_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url.rstrip("/") + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url.rstrip("/") + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def subprocess_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "CELERY_", "EMAIL_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "compliance.settings",
            "DJANGO_ENV": "development",
            "DATABASE_URL": f"{args.postgres.rstrip('/')}/{args.database}",
            "REDIS_URL": args.redis_url,
            "CELERY_BROKER_URL": args.redis_url,
            "VAR_DIR": str(workdir / "var"),
            "EXPORTS_DIR": str(workdir / "exports"),
            # 10,000 subjects would get two emails each; the benchmark is about Mixpanel calls.
            "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # Fast remote progression and sweeps, production rate limit and batch rules.
            "GDPR_DISPATCH_INTERVAL_SECONDS": "1",
            "GDPR_POLL_INITIAL_SECONDS": "1",
            "GDPR_POLL_MAX_SECONDS": "8",
            "GDPR_DELETION_COALESCE_SECONDS": "5",
            "MIXPANEL_MIN_INTERVAL_SECONDS": "1.0",
            "MIXPANEL_BACKOFF_BASE_SECONDS": "2",
            "MIXPANEL_BACKOFF_MAX_SECONDS": "30",
            "MIXPANEL_HTTP_TIMEOUT_SECONDS": "10",
            "MIXPANEL_SANDBOX_ENABLED": "true",
            "MIXPANEL_SANDBOX_STEP_SECONDS": str(args.step_seconds),
            "MIXPANEL_SANDBOX_RATE_LIMIT": "true",
        }
    )
    return env


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def start_sandbox(processes: Processes, workdir: Path) -> str:
    port = free_port()
    config = workdir / "gunicorn.conf.py"  # our own, so that the repository's gunicorn.conf.py is not read
    config.write_text(f"bind = '127.0.0.1:{port}'\nworkers = 2\nthreads = 4\nworker_class = 'gthread'\n")
    processes.start("sandbox", [str(BIN / "gunicorn"), "compliance.wsgi", "-c", str(config)])
    processes.wait_for_log("sandbox", "Booting worker", timeout=60)
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        if time.monotonic() > deadline:
            raise SystemExit("the sandbox did not answer on its port")
        time.sleep(0.2)
    return f"http://127.0.0.1:{port}/sandbox/mixpanel/api/app"


# --- the scenario -------------------------------------------------------------------------------------


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def make_project(base_url: str, batch_size: int, name: str):
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.projects.services import project_create

    return project_create(
        name=name,
        mixpanel_project_id="424242",
        project_token=f"bench-{name.lower()}",
        oauth_token=f"bench-oauth-{name.lower()}",
        token_expires_on=date.today() + timedelta(days=300),
        base_url_override=base_url,
        deletion_batch_size=batch_size,
        actor=Actor.system("benchmark"),
    )


def approve_requests(*, project, kind: str, count: int, ids_per_request: int, report_every: int = 1000) -> float:
    """Create and approve ``count`` requests through the services (audited, as staff would). Returns seconds."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.requests import services

    user, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"email": "bench-staff@example.com", "is_staff": True}
    )
    user.groups.add(Group.objects.get(name="Privacy staff"))
    staff = Actor.staff(user)
    started = time.monotonic()
    for n in range(count):
        request = services.request_create(
            kind=kind,
            regulation="gdpr",
            email=f"subject-{kind}-{n}@example.org",
            distinct_ids=[f"bench-{kind}-{n}-{k}" for k in range(ids_per_request)],
            projects=[project],
            channel="import",
            verified_by_staff="Benchmark data: identity taken as checked.",
            actor=staff,
        )
        services.request_approve(request=request, actor=staff)
        if report_every and (n + 1) % report_every == 0:
            print(f"  approved {n + 1}/{count} ({time.monotonic() - started:.0f}s)", file=sys.stderr, flush=True)
    return time.monotonic() - started


def start_pipeline(processes: Processes, workers: int, workdir: Path) -> None:
    for n in range(workers):
        processes.start(
            f"worker{n + 1}",
            [
                str(BIN / "celery"),
                "-A",
                "compliance",
                "worker",
                "--concurrency=1",
                "--pool=prefork",
                "-Q",
                "celery",
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
                "--loglevel=INFO",
                "-n",
                f"bench{n + 1}@%h",
            ],
        )
    processes.start(
        "beat",
        [
            str(BIN / "celery"),
            "-A",
            "compliance",
            "beat",
            "-s",
            str(workdir / "beat-schedule"),
            "--pidfile",
            str(workdir / "beat.pid"),
            "--loglevel=INFO",
        ],
    )
    for n in range(workers):
        processes.wait_for_log(f"worker{n + 1}", " ready.", timeout=90)
    processes.wait_for_log("beat", "is starting.", timeout=90)  # the banner prints whatever the log level


def wait_until_drained(processes: Processes, timeout: float, total: int) -> tuple[float, dict[str, int]]:
    from django.db.models import Count

    from gdpr_requests.models import DataSubjectRequest
    from gdpr_requests.requests import states

    started = time.monotonic()
    last_report = 0.0
    while True:
        counts = dict(DataSubjectRequest.objects.values_list("status").annotate(n=Count("pk")).order_by())
        open_count = sum(n for status, n in counts.items() if status not in (states.COMPLETED, states.FAILED))
        elapsed = time.monotonic() - started
        if open_count == 0:
            return elapsed, counts
        for name, popen in processes.running:
            if popen.poll() is not None:
                print(f"  warning: {name} exited with {popen.returncode}", file=sys.stderr)
        if elapsed - last_report >= 15:
            last_report = elapsed
            print(f"  {elapsed:5.0f}s: {total - open_count}/{total} finished {counts}", file=sys.stderr, flush=True)
        if elapsed > timeout:
            return elapsed, counts
        time.sleep(1)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def figures(
    *,
    project,
    kind: str,
    requests: int,
    ids: int,
    batch_size: int,
    wall: float,
    counts: dict,
    fake=None,
    approve_seconds: float,
    origin: float,
) -> dict:
    """The scenario's figures from the rows the pipeline wrote. Times (``*_s``) count from ``origin``, the
    moment the workers were ready, as ``wall_seconds`` does."""
    from django.db.models import Max

    from gdpr_requests.models import ApiCall, MixpanelTask, TaskRequestLink, TaskState

    calls = list(
        ApiCall.objects.filter(project=project).values_list("operation", "http_status", "created_at", "duration_ms")
    )
    by_op = Counter(op for op, *_ in calls)
    statuses = Counter(status for _, status, *_ in calls)
    # A step's ApiCall row is committed just before its call is sent (pipeline/calls.py, api_call_begin), so its
    # created_at is the call's start.
    starts = [created.timestamp() for _, _, created, _ in calls]
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    tasks = MixpanelTask.objects.filter(project=project).exclude(state=TaskState.SUPERSEDED)
    if kind == "deletion":
        floor_creates = math.ceil(ids / batch_size)
        floor = 2 * floor_creates  # one create and one poll per batch
    else:
        floor_creates = requests
        floor = 3 * requests  # one create, one poll and one download per retrieval
    total = len(calls)
    create_starts = [start for (op, *_), start in zip(calls, starts, strict=True) if op in CREATES]
    # A request is planned when it is linked to its task (TaskRequestLink rows are written by planning only).
    last_planned = TaskRequestLink.objects.filter(task__project=project).aggregate(at=Max("created_at"))["at"]
    result = {
        "scenario": kind,
        "requests": requests,
        "distinct_ids": ids,
        "batch_size": batch_size,
        "requests_by_status": counts,
        "unfinished": sum(n for status, n in counts.items() if status not in ("completed", "failed")),
        "failed": counts.get("failed", 0),
        "api_calls": total,
        "creates": sum(by_op[op] for op in CREATES),
        "polls": sum(by_op[op] for op in POLLS),
        "downloads": by_op["download"],
        "cancels": by_op["cancel_deletion"],
        "http_429": statuses.get(429, 0),
        "calls_by_operation": dict(by_op),
        "tasks": tasks.count(),
        "calls_per_request": round(total / requests, 4),
        "floor_creates": floor_creates,
        "floor": floor,
        "ratio_to_floor": round(total / floor, 3) if floor else None,
        "max_calls_in_any_1s_window": max_in_window(starts),
        "min_gap_between_calls_s": round(min(gaps), 3) if gaps else None,
        "first_create_s": round(min(create_starts) - origin, 1) if create_starts else None,
        "last_planned_s": round(last_planned.timestamp() - origin, 1) if last_planned else None,
        "wall_seconds": round(wall, 1),
        "approve_seconds": round(approve_seconds, 1),
    }
    if fake is not None:
        arrivals = [c.at for c in fake.snapshot() if c.token == project.project_token]
        result["server_seen_calls"] = len(arrivals)
        result["server_max_calls_in_any_1s_window"] = max_in_window(arrivals)
        server_gaps = [b - a for a, b in itertools.pairwise(sorted(arrivals))]
        result["server_min_gap_s"] = round(min(server_gaps), 3) if server_gaps else None
    return result


def run_scenario(args: argparse.Namespace, kind: str, env: dict[str, str], workdir: Path) -> dict:
    from django.db import connections

    connections.close_all()
    recreate_database(args.postgres, args.database)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"], cwd=BASE_DIR, env=env, check=True, stdout=subprocess.DEVNULL
    )
    flush_redis(args.redis_url)
    log_dir = workdir / f"logs-{kind}"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes(log_dir, env)
    fake = None
    try:
        if args.target == "sandbox":
            base_url = start_sandbox(processes, workdir)
        else:
            from tests.integration.fake_mixpanel import FakeMixpanel

            fake = FakeMixpanel(step_seconds=args.step_seconds).start()
            base_url = fake.base_url
        project = make_project(base_url, args.batch_size, name=f"Bench{kind.title()}")
        count = args.deletions if kind == "deletion" else args.access
        ids_each = args.ids_per_deletion if kind == "deletion" else 1
        print(f"{kind}: approving {count} requests ...", file=sys.stderr, flush=True)
        approve_seconds = approve_requests(project=project, kind=kind, count=count, ids_per_request=ids_each)
        print(f"{kind}: starting {args.workers} workers and beat ...", file=sys.stderr, flush=True)
        start_pipeline(processes, args.workers, workdir)
        origin = time.time()
        wall, counts = wait_until_drained(processes, args.timeout, count)
        return figures(
            project=project,
            kind=kind,
            requests=count,
            ids=count * ids_each,
            batch_size=args.batch_size,
            wall=wall,
            counts=counts,
            fake=fake,
            approve_seconds=approve_seconds,
            origin=origin,
        )
    finally:
        processes.stop_all()
        if fake is not None:
            fake.stop()
        print(f"{kind}: logs in {log_dir}", file=sys.stderr)


def print_figures(result: dict) -> None:
    verdicts = {
        "calls <= 1.25 x floor": result["ratio_to_floor"] is not None and result["ratio_to_floor"] <= 1.25,
        "never over 1 call/s": result["max_calls_in_any_1s_window"] <= 1 and result["http_429"] == 0,
        "no request unfinished": result["unfinished"] == 0,
    }
    print(
        f"\n== {result['scenario']}: {result['requests']} requests, {result['distinct_ids']} ids, "
        f"batch size {result['batch_size']}"
    )
    for key in (
        "requests_by_status",
        "api_calls",
        "creates",
        "polls",
        "downloads",
        "cancels",
        "http_429",
        "calls_by_operation",
        "tasks",
        "calls_per_request",
        "floor_creates",
        "floor",
        "ratio_to_floor",
        "max_calls_in_any_1s_window",
        "min_gap_between_calls_s",
        "server_seen_calls",
        "server_max_calls_in_any_1s_window",
        "server_min_gap_s",
        "first_create_s",
        "last_planned_s",
        "wall_seconds",
        "approve_seconds",
    ):
        if key in result:
            print(f"  {key:34} {result[key]}")
    for name, ok in verdicts.items():
        print(f"  target: {name:26} {'met' if ok else 'NOT MET'}")


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="drain-bench-"))
    env = subprocess_env(args, workdir)
    setup_django(env)
    kinds = {"both": ["deletion", "access"], "deletions": ["deletion"], "access": ["access"]}[args.scenario]
    results = []
    try:
        for kind in kinds:
            result = run_scenario(args, kind, env, workdir)
            results.append(result)
            if args.json:
                print(json.dumps(result, default=str), flush=True)
            else:
                print_figures(result)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(args.postgres, args.database)
    return 0 if all(r["unfinished"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
