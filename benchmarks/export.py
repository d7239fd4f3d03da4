"""Benchmark of the audit trail export and verification on PostgreSQL (prints its figures; not a test).

    .venv/bin/python benchmarks/export.py postgres://postgres@127.0.0.1:5432/bench_export [--events 1000000]

1. Creates the database if it is missing, migrates it, and loads ``--events`` valid chained audit events (hashes
   computed here, rows sent with COPY FROM STDIN; the append-only triggers are dropped for the load only and put
   back). A database that already holds them is reused (``--reload`` forces a fresh load).
2. Times the CSV export through the real view (test client, a signed-in auditor, reading ``streaming_content``)
   against ``COPY (SELECT the same columns ORDER BY sequence) TO STDOUT`` in the same run. Target: <= 3x.
3. Measures the peak memory (max RSS) of a fresh process exporting the first 100,000 events and all of them
   through the view. Target: < 150 MB and flat.
4. Times ``audit verify`` (``verify_database``) against a plain loop computing the same HMACs over the same rows
   read with a plain server-side cursor. Target: <= 2x.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMALL = 100_000
# 8.64 s apart: 100,000 events fill exactly ten days, so a date-range export selects the first 100,000.
SPACING = timedelta(seconds=8.64)
BASE = datetime(2024, 1, 1, tzinfo=UTC)
COLUMNS = (
    "sequence",
    "occurred_at",
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "request_reference",
    "payload",
    "prev_hash",
    "hash",
)
ACTIONS = [
    ("request.created", "system", "", "system"),
    ("request.verify", "subject", "", "data subject"),
    ("request.approve", "staff", "7", "alice"),
    ("request.start_processing", "system", "", "system"),
    ("task.submitted", "system", "", "pipeline"),
    ("task.polled", "system", "", "pipeline"),
    ("request.complete", "system", "", "system"),
]


def _setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compliance.settings")
    os.environ["DJANGO_DEBUG"] = "false"  # DEBUG keeps every query in memory
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    import django

    django.setup()


def _create_database(database_url: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def _event(i: int) -> dict:
    action, actor_type, actor_id, actor_label = ACTIONS[i % len(ACTIONS)]
    reference = f"DSR-{i // 7 % 10000:04d}-{i % 9973:04X}"
    payload = {"from": "verified", "to": "approved", "task_count": i % 5, "tracking": f"trk-{i:08d}"}
    if action == "request.created":
        payload = {"kind": "deletion", "regulation": "gdpr", "channel": "web", "distinct_id_count": 1, "n": i}
    return {
        "occurred_at": (BASE + SPACING * i).isoformat(timespec="microseconds"),
        "actor_type": actor_type,
        "actor_id": actor_id,
        "actor_label": actor_label,
        "action": action,
        "request_reference": reference,
        "payload": payload,
    }


def _load(count: int, *, reload: bool) -> None:
    from django.conf import settings
    from django.db import connection, transaction

    from gdpr_requests.audit import triggers as audit_triggers
    from gdpr_requests.audit.chain import GENESIS_HASH
    from gdpr_requests.models import AuditEvent

    first = AuditEvent.objects.filter(sequence=1).values_list("action", flat=True).first()
    if not reload and first == ACTIONS[0][0] and AuditEvent.objects.filter(sequence=count).exists():
        print(f"reusing the {count:,} loaded events")
        return
    key = settings.AUDIT_CHAIN_KEY.encode()
    started = time.perf_counter()
    with transaction.atomic():
        audit_triggers.drop(connection)
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {audit_triggers.TABLE}, {audit_triggers.HEAD_TABLE}")
            prev = GENESIS_HASH
            columns = ", ".join(COLUMNS)
            with cursor.cursor.copy(f"COPY {audit_triggers.TABLE} ({columns}) FROM STDIN") as copy:
                for i in range(count):
                    body = _event(i)
                    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                    digest = hmac.new(key, prev.encode() + canonical.encode(), hashlib.sha256).hexdigest()
                    copy.write_row(
                        (
                            i + 1,
                            body["occurred_at"],
                            body["actor_type"],
                            body["actor_id"],
                            body["actor_label"],
                            body["action"],
                            body["request_reference"],
                            json.dumps(body["payload"]),
                            prev,
                            digest,
                        )
                    )
                    prev = digest
            # The chain head checkpoint that audit_record would have moved (verification compares the end with it).
            cursor.execute(
                f"INSERT INTO {audit_triggers.HEAD_TABLE} (id, sequence, hash) VALUES (1, %s, %s)", [count, prev]
            )
        audit_triggers.install(connection)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {audit_triggers.TABLE}")
    print(f"loaded {count:,} events in {time.perf_counter() - started:.1f} s")


def _auditor_client():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username="bench-auditor", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="Auditors"))
    client = Client()
    client.force_login(user)
    return client


def _export_through_view(query: dict) -> tuple[int, int]:
    """(bytes, lines) of the CSV export read from the real view."""
    response = _auditor_client().get("/reports/audit-trail/", {"format": "csv", **query})
    assert response.status_code == 200, response.status_code
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    return size, lines


def _copy_out() -> int:
    from django.db import connection

    from gdpr_requests.audit import triggers as audit_triggers

    size = 0
    sql = f"COPY (SELECT {', '.join(COLUMNS)} FROM {audit_triggers.TABLE} ORDER BY sequence) TO STDOUT WITH CSV"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for block in copy:
            size += len(block)
    return size


def _plain_hmac_loop() -> int:
    """The least work that checks the same HMACs: rows from a server-side cursor, canonical JSON, HMAC."""
    from django.conf import settings
    from django.db import connection, transaction

    from gdpr_requests.audit import triggers as audit_triggers

    key = settings.AUDIT_CHAIN_KEY.encode()
    names = COLUMNS[1:8]
    bad = count = 0
    with transaction.atomic(), connection.cursor() as wrapper:
        cursor = wrapper.connection.cursor(name="bench_plain")
        cursor.itersize = 5000
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM {audit_triggers.TABLE} ORDER BY sequence")
        for row in cursor:
            body = dict(zip(names, row[1:8], strict=True))
            # Django's psycopg loader hands jsonb over as text; the HMAC covers the parsed value.
            body["payload"] = json.loads(body["payload"]) if isinstance(body["payload"], str) else body["payload"]
            body["occurred_at"] = row[1].astimezone(UTC).isoformat(timespec="microseconds")
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            digest = hmac.new(key, row[8].encode() + canonical, hashlib.sha256).hexdigest()
            bad += digest != row[9]
            count += 1
    assert bad == 0, f"{bad} rows do not match"
    return count


def _peak_rss_kb() -> int:
    """This process's resident high-water mark (VmHWM). Unlike ru_maxrss it starts afresh at exec, so the
    parent's own peak does not leak into the child's figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover - not Linux


def _memory_child(database_url: str, until: str | None) -> None:
    _setup(database_url)
    _auditor_client()  # sign-in and its queries are not the export's
    before = _peak_rss_kb()
    query = {"since": BASE.date().isoformat(), "until": until} if until else {}
    started = time.perf_counter()
    size, lines = _export_through_view(query)
    seconds = time.perf_counter() - started
    peak = _peak_rss_kb()
    print(json.dumps({"rss_before_kb": before, "rss_peak_kb": peak, "bytes": size, "lines": lines, "seconds": seconds}))


def _measure_memory(database_url: str, until: str | None) -> dict:
    command = [sys.executable, __file__, database_url, "--memory-child"]
    if until:
        command += ["--until", until]
    output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=3600).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database_url", help="postgres://user@host:port/name (created when missing)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reload", action="store_true", help="load the events again even if they are there")
    parser.add_argument("--skip-verify", action="store_true", help="leave out the (long) verify comparison")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--until", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("the benchmark needs a PostgreSQL DATABASE_URL (postgres://...)")
    if args.memory_child:
        _memory_child(args.database_url, args.until)
        return

    _create_database(args.database_url)
    _setup(args.database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    _load(args.events, reload=args.reload)
    print(f"PostgreSQL, {args.events:,} events\n")

    _export_through_view({})  # warm the caches the same way for both sides
    started = time.perf_counter()
    size, lines = _export_through_view({})
    export_seconds = time.perf_counter() - started
    started = time.perf_counter()
    copy_size = _copy_out()
    copy_seconds = time.perf_counter() - started
    ratio = export_seconds / copy_seconds
    print(f"CSV export through the view: {export_seconds:6.2f} s  {size / 1e6:7.1f} MB  {lines:,} lines")
    print(f"COPY ... TO STDOUT (same columns): {copy_seconds:6.2f} s  {copy_size / 1e6:7.1f} MB")
    print(f"  ratio {ratio:.2f}x (target <= 3x): {'OK' if ratio <= 3 else 'MISSED'}\n")

    small_until = (BASE + SPACING * (SMALL - 1)).date().isoformat()
    small = _measure_memory(args.database_url, small_until)
    large = _measure_memory(args.database_url, None)
    for label, figures in ((f"{SMALL:,} events", small), ("all events", large)):
        print(
            f"peak RSS exporting {label:>14}: {figures['rss_peak_kb'] / 1024:6.1f} MB "
            f"(process before the export {figures['rss_before_kb'] / 1024:5.1f} MB; "
            f"{figures['lines']:,} lines in {figures['seconds']:.1f} s)"
        )
    growth = (large["rss_peak_kb"] - small["rss_peak_kb"]) / 1024
    flat = large["rss_peak_kb"] / 1024 < 150 and growth < 15
    print(
        f"  growth from {SMALL:,} to all: {growth:+.1f} MB (target < 150 MB and flat): {'OK' if flat else 'MISSED'}\n"
    )

    if args.skip_verify:
        return
    from gdpr_requests.audit import chain as audit

    started = time.perf_counter()
    result = audit.verify_database()
    verify_seconds = time.perf_counter() - started
    assert result.ok, result.summary()
    started = time.perf_counter()
    checked = _plain_hmac_loop()
    plain_seconds = time.perf_counter() - started
    ratio = verify_seconds / plain_seconds
    print(f"audit verify (verify_database): {verify_seconds:6.2f} s  {result.count:,} events")
    print(f"plain HMAC loop, same rows:     {plain_seconds:6.2f} s  {checked:,} events")
    print(f"  ratio {ratio:.2f}x (target <= 2x): {'OK' if ratio <= 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
