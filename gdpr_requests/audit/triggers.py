"""Database triggers that keep the audit trail append-only, and the check that they are still in place.

The events table refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL). On SQLite it also refuses an INSERT
that would replace a row: ``INSERT OR REPLACE`` (or a REPLACE conflict clause) deletes the colliding row
without firing DELETE triggers, so it could edit an event in place or remove one. On PostgreSQL
``INSERT ... ON CONFLICT DO UPDATE`` goes through the UPDATE trigger and is refused like any UPDATE.

The chain head checkpoint (one row: the last sequence and its hash) may only move forward: its sequence must
grow on every UPDATE, a second row is refused, and DELETE and TRUNCATE are refused.

``install``/``drop`` put back or lift every trigger (flush and tests lift them in one transaction). ``missing``
names the triggers that are absent or disabled, for ``audit verify`` and the deep readiness probe.
"""

from __future__ import annotations

from typing import Any

# Every statement here is built from the constants below only (S608 is silenced for them).

TABLE = "gdpr_requests_auditevent"
HEAD_TABLE = "gdpr_requests_auditchainhead"
MESSAGE = "audit events are append-only"
HEAD_MESSAGE = "the audit chain head only moves forward"

_SQLITE_EVENTS = {
    "auditevent_no_update": f"BEFORE UPDATE ON {TABLE} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
    "auditevent_no_delete": f"BEFORE DELETE ON {TABLE} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
    # Any insert that collides on a unique column would replace (REPLACE) or update (upsert) an event: refuse
    # it before the conflict clause gets a say. A new row's id is NULL or -1 here, so it matches nothing.
    "auditevent_no_replace": (
        f"BEFORE INSERT ON {TABLE} WHEN EXISTS (SELECT 1 FROM {TABLE} WHERE id = NEW.id "  # noqa: S608
        f"OR sequence = NEW.sequence OR hash = NEW.hash) BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    ),
}
_SQLITE_HEAD = {
    "auditchainhead_one_row": (
        f"BEFORE INSERT ON {HEAD_TABLE} WHEN EXISTS (SELECT 1 FROM {HEAD_TABLE}) "  # noqa: S608
        f"BEGIN SELECT RAISE(ABORT, '{HEAD_MESSAGE}'); END"
    ),
    "auditchainhead_forward": (
        f"BEFORE UPDATE ON {HEAD_TABLE} WHEN NEW.id IS NOT OLD.id OR NEW.sequence IS NULL "
        f"OR NEW.sequence <= OLD.sequence BEGIN SELECT RAISE(ABORT, '{HEAD_MESSAGE}'); END"
    ),
    "auditchainhead_no_delete": f"BEFORE DELETE ON {HEAD_TABLE} BEGIN SELECT RAISE(ABORT, '{HEAD_MESSAGE}'); END",
}

_PG_FUNCTIONS = [
    "CREATE OR REPLACE FUNCTION auditevent_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END; $$;",
    "CREATE OR REPLACE FUNCTION auditchainhead_guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "  # noqa: S608
    f"IF TG_OP = 'INSERT' AND NOT EXISTS (SELECT 1 FROM {HEAD_TABLE}) THEN RETURN NEW; END IF; "
    "IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.sequence > OLD.sequence THEN RETURN NEW; END IF; "
    f"RAISE EXCEPTION '{HEAD_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END; $$;",
]
# name -> (table, definition after "CREATE TRIGGER name")
_PG_TRIGGERS = {
    "auditevent_no_change": (
        TABLE,
        f"BEFORE UPDATE OR DELETE ON {TABLE} FOR EACH ROW EXECUTE FUNCTION auditevent_refuse_change()",
    ),
    "auditevent_no_truncate": (
        TABLE,
        f"BEFORE TRUNCATE ON {TABLE} FOR EACH STATEMENT EXECUTE FUNCTION auditevent_refuse_change()",
    ),
    "auditchainhead_guard": (
        HEAD_TABLE,
        f"BEFORE INSERT OR UPDATE OR DELETE ON {HEAD_TABLE} FOR EACH ROW EXECUTE FUNCTION auditchainhead_guard()",
    ),
    "auditchainhead_no_truncate": (
        HEAD_TABLE,
        f"BEFORE TRUNCATE ON {HEAD_TABLE} FOR EACH STATEMENT EXECUTE FUNCTION auditchainhead_guard()",
    ),
}


def _run(connection: Any, statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _has_head_table(connection: Any) -> bool:
    # Migration 0002 installs the events' triggers before migration 0009 makes the head table.
    with connection.cursor() as cursor:
        return HEAD_TABLE in connection.introspection.table_names(cursor)


def expected(connection: Any) -> list[str]:
    """The names of the triggers that protect the trail on this database."""
    if connection.vendor == "postgresql":
        return sorted(_PG_TRIGGERS)
    if connection.vendor == "sqlite":
        return sorted({**_SQLITE_EVENTS, **_SQLITE_HEAD})
    raise RuntimeError(f"No append-only triggers for the {connection.vendor} database.")


def install(connection: Any) -> None:
    """Create every trigger (idempotent); those of the head table once it exists."""
    with_head = _has_head_table(connection)
    if connection.vendor == "postgresql":
        statements = list(_PG_FUNCTIONS)
        for name, (table, definition) in _PG_TRIGGERS.items():
            if table == HEAD_TABLE and not with_head:
                continue
            statements += [f"DROP TRIGGER IF EXISTS {name} ON {table};", f"CREATE TRIGGER {name} {definition};"]
        _run(connection, statements)
    elif connection.vendor == "sqlite":
        triggers = {**_SQLITE_EVENTS, **(_SQLITE_HEAD if with_head else {})}
        _run(connection, [f"CREATE TRIGGER IF NOT EXISTS {name} {body};" for name, body in triggers.items()])
    else:
        raise RuntimeError(f"No append-only triggers for the {connection.vendor} database.")


def drop(connection: Any) -> None:
    """Lift every trigger (flush and deliberate resets only, inside a transaction that puts them back)."""
    with_head = _has_head_table(connection)
    if connection.vendor == "postgresql":
        _run(
            connection,
            [
                f"DROP TRIGGER IF EXISTS {name} ON {table};"
                for name, (table, _) in _PG_TRIGGERS.items()
                if table != HEAD_TABLE or with_head
            ],
        )
    elif connection.vendor == "sqlite":
        _run(connection, [f"DROP TRIGGER IF EXISTS {name};" for name in {**_SQLITE_EVENTS, **_SQLITE_HEAD}])


def missing(connection: Any) -> list[str]:
    """The protecting triggers that are absent or disabled (an empty list when all are in place)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # tgenabled 'D': ALTER TABLE ... DISABLE TRIGGER leaves the trigger in place but asleep.
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D' "
                "AND tgrelid IN (SELECT oid FROM pg_class WHERE relname IN (%s, %s) "
                "AND relnamespace = current_schema()::regnamespace)",
                [TABLE, HEAD_TABLE],
            )
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        present = {row[0] for row in cursor.fetchall()}
    return [name for name in expected(connection) if name not in present]
