#!/usr/bin/env python
"""Resolve benchmark: how few profile queries, within which budgets, find 2,000 people in Mixpanel.

2,000 verified email-only requests (an import: created at once), each on 2 projects, are looked up against the
app's own sandbox (mixpanel_sandbox/engage.py: the Query API's contract, 60 queries per scaled hour and 5 at once
per project, one synthetic profile per address at sandbox.example). The hour is scaled: the app's limiter and
the sandbox both use ``--window`` seconds. Everything else is the product's code: the beat tick
(``lookups_dispatch`` every ``--tick`` seconds) and ``--workers`` threads running ``lookup_batch_run`` as Celery
workers would, on a fresh PostgreSQL database and the Redis limiter. The sandbox runs in a thread behind a WSGI
server on loopback and adds ``--latency`` seconds to every query, so that queries overlap as real ones do.

Printed: queries made / floor (floor = ceil(emails / MIXPANEL_RESOLVE_BATCH) per project; target <= 1.1), the
busiest rolling window per project (<= 60) and the most queries running at once (<= 5), as the sandbox saw them,
429s received, whether every request was resolved, and the time from verification to candidates.

Usage (PostgreSQL and Redis on loopback):
    .venv/bin/python benchmarks/resolve.py
    .venv/bin/python benchmarks/resolve.py --requests 500 --window 10 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="verified email-only requests (default 2000)")
    parser.add_argument("--projects", type=int, default=2)
    parser.add_argument("--window", type=float, default=20.0, help="the scaled hour, in seconds (default 20)")
    parser.add_argument("--tick", type=float, default=0.25, help="the beat tick, in seconds (default 0.25)")
    parser.add_argument("--workers", type=int, default=8, help="worker threads (more than the 5 allowed at once)")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds the sandbox takes per query")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="server URL, no db name")
    parser.add_argument("--database", default="h_identity_resolve_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for url in (args.postgres, args.redis_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error(f"{url}: the benchmark runs on loopback only")
    if args.requests < 1 or args.projects < 1 or args.workers < 1:
        parser.error("--requests, --projects and --workers must be at least 1")
    return args


def setup_django(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(args.postgres.rstrip("/") + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "compliance.settings",
            "DJANGO_ENV": "development",
            "DATABASE_URL": f"{args.postgres.rstrip('/')}/{args.database}",
            "REDIS_URL": args.redis_url,
            "CELERY_BROKER_URL": "memory://",
            "MIXPANEL_SANDBOX_ENABLED": "true",
            "MIXPANEL_SANDBOX_FAULT_429": "0",
            "MIXPANEL_SANDBOX_FAULT_5XX": "0",
            "MIXPANEL_SANDBOX_FAULT_SLOW": "0",
            "MIXPANEL_QUERY_WINDOW_SECONDS": str(args.window),
            "MIXPANEL_SANDBOX_QUERY_WINDOW_SECONDS": str(args.window),
            "MIXPANEL_HTTP_TIMEOUT_SECONDS": "10",
            "LOG_LEVEL": "ERROR",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import redis

    client = redis.Redis.from_url(args.redis_url)
    for key in client.scan_iter("dsr:mixpanel-query:*"):
        client.delete(key)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def start_sandbox(latency: float) -> str:
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()

    def slow_engage(environ, start_response):  # type: ignore[no-untyped-def]
        if environ.get("PATH_INFO", "").endswith("/api/query/engage"):
            time.sleep(latency)
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, slow_engage, server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def make_data(args: argparse.Namespace, base: str) -> list:
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.identity.services import project_set_query_access
    from gdpr_requests.projects.services import project_create
    from gdpr_requests.requests.services import prepare_request, request_create_many

    actor = Actor.system("benchmark")
    projects = []
    for n in range(args.projects):
        project = project_create(
            name=f"Bench {n + 1}",
            mixpanel_project_id=str(7000 + n),
            project_token=f"benchtok{n}",
            oauth_token="oauth-bench",
            token_expires_on="2027-06-01",
            base_url_override=f"{base}/sandbox/mixpanel/api/app",
            actor=actor,
        )
        projects.append(
            project_set_query_access(project=project, actor=actor, username=f"sa.bench{n}", secret=f"secret{n}")
        )
    for start in range(0, args.requests, 500):
        rows = [
            prepare_request(
                kind="deletion",
                regulation="gdpr",
                email=f"person{i}@sandbox.example",
                channel="import",
                verified_by_staff="benchmark import",
                actor=actor,
            )
            for i in range(start, min(start + 500, args.requests))
        ]
        request_create_many(rows, actor=actor, projects=projects)
    return projects


def run(args: argparse.Namespace, base: str) -> dict:
    from django.conf import settings
    from django.db import connection

    from gdpr_requests.identity import resolution
    from gdpr_requests.models import IdentityCandidate, IdentityLookup, LookupStatus
    from mixpanel_sandbox.engage import recorder

    work: queue.Queue = queue.Queue()
    resolution._send = lambda project_id, token: work.put((project_id, token))  # the workers' queue
    stop = threading.Event()
    errors: list[str] = []

    def worker() -> None:
        from django.db import connection as conn

        try:
            while not stop.is_set():
                try:
                    project_id, token = work.get(timeout=0.1)
                except queue.Empty:
                    continue
                try:
                    resolution.lookup_batch_run(project_id=project_id, token=token)
                except Exception as exc:  # reported, not hidden
                    errors.append(type(exc).__name__)
        finally:
            conn.close()

    def beat() -> None:
        from django.db import connection as conn

        try:
            while not stop.is_set():
                resolution.lookups_dispatch()
                time.sleep(args.tick)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    threads.append(threading.Thread(target=beat, daemon=True))
    recorder.reset()
    for thread in threads:
        thread.start()
    # The beat and the workers run while the requests come in, as they would in production.
    started = time.monotonic()
    make_data(args, base)
    expected = args.requests * args.projects
    done = IdentityLookup.objects.filter(status__in=[LookupStatus.DONE, LookupStatus.FAILED])
    while done.count() < expected:
        if time.monotonic() - started > args.timeout:
            stop.set()
            raise SystemExit(f"gave up after {args.timeout:.0f} s with {expected - done.count()} lookups open")
        time.sleep(0.5)
    wall = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join()
    connection.close()

    batch = int(settings.MIXPANEL_RESOLVE_BATCH)
    per_project: dict[str, dict] = {}
    for project_id in sorted({c[0] for c in recorder.calls}):
        calls = sorted(c for c in recorder.calls if c[0] == project_id)
        starts = [c[1] for c in calls]
        busiest = max(sum(1 for t in starts[i:] if t < s + args.window) for i, s in enumerate(starts))
        per_project[project_id] = {
            "queries": len(calls),
            "rate_limited_429": sum(1 for c in calls if c[3] == 429),
            "busiest_window": busiest,
            "most_concurrent": recorder.most_running.get(project_id, 0),
        }
    floor = args.projects * math.ceil(args.requests / batch)
    queries = sum(p["queries"] for p in per_project.values())
    done = IdentityLookup.objects.filter(status=LookupStatus.DONE)
    latencies = [
        (finished - queued).total_seconds() for queued, finished in done.values_list("queued_at", "finished_at")
    ]
    latencies.sort()
    return {
        "requests": args.requests,
        "projects": args.projects,
        "batch": batch,
        "window_s": args.window,
        "tick_s": args.tick,
        "workers": args.workers,
        "latency_s": args.latency,
        "queries": queries,
        "floor": floor,
        "queries_over_floor": round(queries / floor, 3),
        "per_project": per_project,
        "lookups_done": done.count(),
        "lookups_expected": args.requests * args.projects,
        "candidates": IdentityCandidate.objects.count(),
        "all_resolved": done.count() == args.requests * args.projects,
        "verification_to_candidates_s": {
            "p50": round(statistics.median(latencies), 2) if latencies else None,
            "p95": round(latencies[int(len(latencies) * 0.95) - 1], 2) if latencies else None,
            "max": round(latencies[-1], 2) if latencies else None,
        },
        "verification_to_candidates_scaled_hours_max": round(latencies[-1] / args.window, 2) if latencies else None,
        "wall_s": round(wall, 2),
        "worker_errors": errors,
    }


def main() -> None:
    args = parse_args()
    setup_django(args)
    base = start_sandbox(args.latency)
    result = run(args, base)
    if args.json:
        print(json.dumps(result))
        return
    print(f"resolve: {result['requests']} verified email-only requests x {result['projects']} projects")
    print(
        f"  scaled hour {args.window:g} s, beat tick {args.tick:g} s, {args.workers} workers, batch {result['batch']}"
    )
    print(f"  queries made / floor: {result['queries']} / {result['floor']} = {result['queries_over_floor']}")
    for project_id, figures in result["per_project"].items():
        print(
            f"  project {project_id}: {figures['queries']} queries, busiest rolling hour {figures['busiest_window']}"
            f" (<= 60), most concurrent {figures['most_concurrent']} (<= 5), 429s {figures['rate_limited_429']}"
        )
    print(
        f"  resolved: {result['lookups_done']} / {result['lookups_expected']} lookups"
        f" ({'all' if result['all_resolved'] else 'NOT ALL'}), {result['candidates']} candidates"
    )
    lat = result["verification_to_candidates_s"]
    print(
        f"  verification -> candidates: p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s"
        f" ({result['verification_to_candidates_scaled_hours_max']} scaled hours); wall {result['wall_s']} s"
    )
    if result["worker_errors"]:
        print(f"  worker errors: {result['worker_errors']}")


if __name__ == "__main__":
    main()
