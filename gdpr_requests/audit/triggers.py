"""Database triggers that keep the audit trail append-only, and the check that they are still in place.

The events table refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL). On SQLite it also refuses an INSERT
that would replace a row: ``INSERT OR REPLACE`` (or a REPLACE conflict clause) deletes the colliding row
without firing DELETE triggers, so it could edit an event in place or remove one. On PostgreSQL
``INSERT ... ON CONFLICT DO UPDATE`` goes through the UPDATE trigger and is refused like any UPDATE.

The chain head checkpoint (one row: the last sequence and its hash) may only move forward: its sequence must
grow on every UPDATE, a second row is refused, and DELETE and TRUNCATE are refused.

``install``/``drop`` put back or lift every trigger (flush and tests lift them in one transaction). ``missing``
names the triggers that are absent, disabled or altered, for ``audit verify`` and the deep readiness probe.
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

# function name -> its PL/pgSQL body (what pg_proc.prosrc holds, which ``missing`` compares).
_PG_FUNCTIONS = {
    "auditevent_refuse_change": f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END;",
    "auditchainhead_guard": (
        f"BEGIN IF TG_OP = 'INSERT' AND NOT EXISTS (SELECT 1 FROM {HEAD_TABLE}) THEN RETURN NEW; END IF; "  # noqa: S608
        "IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.sequence > OLD.sequence THEN RETURN NEW; END IF; "
        f"RAISE EXCEPTION '{HEAD_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END;"
    ),
}
# pg_trigger.tgtype bits: 1 row-level, 2 before, 4 insert, 8 delete, 16 update, 32 truncate.
_ROW, _BEFORE, _INSERT, _DELETE, _UPDATE, _TRUNCATE = 1, 2, 4, 8, 16, 32
# name -> (table, events, function, tgtype)
_PG_TRIGGERS = {
    "auditevent_no_change": (
        TABLE,
        "UPDATE OR DELETE",
        "auditevent_refuse_change",
        _ROW | _BEFORE | _UPDATE | _DELETE,
    ),
    "auditevent_no_truncate": (TABLE, "TRUNCATE", "auditevent_refuse_change", _BEFORE | _TRUNCATE),
    "auditchainhead_guard": (
        HEAD_TABLE,
        "INSERT OR UPDATE OR DELETE",
        "auditchainhead_guard",
        _ROW | _BEFORE | _INSERT | _UPDATE | _DELETE,
    ),
    "auditchainhead_no_truncate": (HEAD_TABLE, "TRUNCATE", "auditchainhead_guard", _BEFORE | _TRUNCATE),
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
        statements = [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$;"
            for name, body in _PG_FUNCTIONS.items()
        ]
        for name, (table, events, function, tgtype) in _PG_TRIGGERS.items():
            if table == HEAD_TABLE and not with_head:
                continue
            level = "ROW" if tgtype & _ROW else "STATEMENT"
            statements += [
                f"DROP TRIGGER IF EXISTS {name} ON {table};",
                f"CREATE TRIGGER {name} BEFORE {events} ON {table} FOR EACH {level} EXECUTE FUNCTION {function}();",
            ]
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
                for name, (table, *_) in _PG_TRIGGERS.items()
                if table != HEAD_TABLE or with_head
            ],
        )
    elif connection.vendor == "sqlite":
        _run(connection, [f"DROP TRIGGER IF EXISTS {name};" for name in {**_SQLITE_EVENTS, **_SQLITE_HEAD}])


def _normal(text: str) -> str:
    return " ".join(text.split())


def _pg_intact(name: str, table: str, tgtype: int, function: str, source: str) -> bool:
    if name not in _PG_TRIGGERS:
        return False
    expected_table, _, expected_function, expected_type = _PG_TRIGGERS[name]
    return (table, function, tgtype) == (expected_table, expected_function, expected_type) and _normal(
        source
    ) == _normal(_PG_FUNCTIONS[function])


def missing(connection: Any) -> list[str]:
    """The protecting triggers that are absent, disabled or altered (an empty list when all are in place).

    Altered: a trigger (or, on PostgreSQL, its function) whose definition is no longer the one installed here,
    e.g. a function replaced by one that lets every change through.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # tgenabled 'D': ALTER TABLE ... DISABLE TRIGGER leaves the trigger in place but asleep.
            cursor.execute(
                "SELECT t.tgname, c.relname, t.tgtype, p.proname, p.prosrc FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND c.relname IN (%s, %s) "
                "AND c.relnamespace = current_schema()::regnamespace",
                [TABLE, HEAD_TABLE],
            )
            present = {row[0] for row in cursor.fetchall() if _pg_intact(*row)}
        else:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            wanted = {**_SQLITE_EVENTS, **_SQLITE_HEAD}
            present = {
                name
                for name, sql in cursor.fetchall()
                if name in wanted and _normal(sql) == _normal(f"CREATE TRIGGER {name} {wanted[name]}")
            }
    return [name for name in expected(connection) if name not in present]
