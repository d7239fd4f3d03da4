#!/usr/bin/env python
"""Staff console benchmark: bulk approval through the admin action's confirmation POST, on PostgreSQL.

Creates the database if it is missing and migrates it, then for each size given (default 100 and 1,000) enters
that many verified deletion requests (through request_create_many) and approves them all the way staff do: one
POST of the change list's "Approve selected requests…" action with ``apply`` and the confirmation ticked
(Django's test client, a signed-in member of "Privacy staff"). It prints the server time of that POST, the SQL
statements it ran and the requests approved; targets: < 3 s for 1,000 and a statement count that does not grow
with the number of rows. The planning messages go to the Celery broker given (default: Redis database 4,
flushed at the end; ``--broker memory://`` leaves Redis out).

    .venv/bin/python benchmarks/staff.py [postgres://postgres@127.0.0.1:5432/h_console] [--sizes 100 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_SECONDS = 3.0


def _create_database(database_url: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def _setup(database_url: str, broker: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["CELERY_BROKER_URL"] = broker
    os.environ.setdefault("REDIS_URL", broker if broker.startswith("redis") else "")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compliance.settings")
    os.environ["DJANGO_DEBUG"] = "false"  # DEBUG keeps every query in memory
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    import django

    django.setup()


def _staff_user():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="Privacy staff"))
    return user


def _project():
    from datetime import date

    from gdpr_requests.models import MixpanelProject

    project, _ = MixpanelProject.objects.get_or_create(
        name="Bench app",
        defaults={
            "mixpanel_project_id": "1",
            "project_token": "benchtoken",
            "oauth_token": "bench-oauth",
            "token_expires_on": date(2030, 1, 1),
        },
    )
    return project


def _verified_requests(n: int, project, run: str) -> list[int]:
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.requests import services

    actor = Actor.system("benchmark")
    built = [
        services.prepare_request(
            kind="deletion",
            regulation="gdpr",
            email=f"bench-{run}-{i}@example.org",
            distinct_ids=[f"bench-{run}-{i}"],
            channel="staff",
            verified_by_staff="benchmark",
            actor=actor,
        )
        for i in range(n)
    ]
    return [dsr.pk for dsr in services.request_create_many(built, actor=actor, projects=[project])]


def _approve_through_admin(client, pks: list[int]) -> tuple[float, int, int]:
    from django.db import connection
    from django.urls import reverse

    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    # As a browser sends it after "Select all N" on the list filtered to verified requests: the first page's
    # ids, select_across=1 and the filter in the query string, form-encoded.
    data = {
        "action": "approve_selected",
        "_selected_action": pks[:100],
        "index": 0,
        "select_across": "1",
        "apply": "1",
        "confirm": "on",
    }
    url = reverse("admin:gdpr_requests_datasubjectrequest_changelist") + "?status__exact=verified"
    body = urlencode(data, doseq=True)
    with connection.execute_wrapper(count):
        started = time.perf_counter()
        response = client.post(url, body, content_type="application/x-www-form-urlencoded")
        elapsed = time.perf_counter() - started
    if response.status_code != 302:
        raise SystemExit(f"the approval POST answered {response.status_code}")
    return elapsed, statements, response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database_url", nargs="?", default="postgres://postgres@127.0.0.1:5432/h_console")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/4")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        raise SystemExit("this benchmark runs on PostgreSQL: give a postgres:// URL")
    _create_database(args.database_url)
    _setup(args.database_url, args.broker)

    from django.core.management import call_command
    from django.test import Client

    from gdpr_requests.models import DataSubjectRequest
    from gdpr_requests.requests import states

    call_command("migrate", verbosity=0)
    client = Client()
    client.force_login(_staff_user())
    project = _project()
    run = str(int(time.time()))
    print(f"{'requests':>9} {'server time':>12} {'SQL statements':>15} {'approved':>9}")
    results = []
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.requests.approvals import request_approve_many

    # Requests left verified by an interrupted run would be selected too: approve them first.
    leftover = list(DataSubjectRequest.objects.filter(status=states.VERIFIED).values_list("pk", flat=True))
    request_approve_many(request_pks=leftover, actor=Actor.system("benchmark"))
    for n in args.sizes:
        pks = _verified_requests(n, project, f"{run}-{n}")
        elapsed, statements, _ = _approve_through_admin(client, pks)
        approved = DataSubjectRequest.objects.filter(pk__in=pks, status=states.APPROVED).count()
        results.append((n, elapsed, statements))
        print(f"{n:>9} {elapsed:>11.2f}s {statements:>15} {approved:>9}")
    largest = max(results)
    flat = len({statements for _, _, statements in results}) == 1
    print(
        f"target: < {TARGET_SECONDS:.0f} s for {largest[0]} requests: {'met' if largest[1] < TARGET_SECONDS else 'MISSED'}; "
        f"statement count flat across sizes: {'yes' if flat else 'NO'}"
    )
    if args.broker.startswith("redis"):
        import redis

        redis.Redis.from_url(args.broker).flushdb()


if __name__ == "__main__":
    main()
