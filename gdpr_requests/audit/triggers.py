"""Database triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) on the audit table."""

from __future__ import annotations

from typing import Any

TABLE = "gdpr_requests_auditevent"
MESSAGE = "audit events are append-only"

_SQLITE_INSTALL = [
    f"CREATE TRIGGER IF NOT EXISTS auditevent_no_update BEFORE UPDATE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
    f"CREATE TRIGGER IF NOT EXISTS auditevent_no_delete BEFORE DELETE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
]
_SQLITE_DROP = ["DROP TRIGGER IF EXISTS auditevent_no_update;", "DROP TRIGGER IF EXISTS auditevent_no_delete;"]

_PG_INSTALL = [
    "CREATE OR REPLACE FUNCTION auditevent_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END; $$;",
    f"DROP TRIGGER IF EXISTS auditevent_no_change ON {TABLE};",
    f"CREATE TRIGGER auditevent_no_change BEFORE UPDATE OR DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION auditevent_refuse_change();",
    f"DROP TRIGGER IF EXISTS auditevent_no_truncate ON {TABLE};",
    f"CREATE TRIGGER auditevent_no_truncate BEFORE TRUNCATE ON {TABLE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION auditevent_refuse_change();",
]
_PG_DROP = [
    f"DROP TRIGGER IF EXISTS auditevent_no_change ON {TABLE};",
    f"DROP TRIGGER IF EXISTS auditevent_no_truncate ON {TABLE};",
]


def _run(connection: Any, statements: list[str]) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def install(connection: Any) -> None:
    if connection.vendor == "postgresql":
        _run(connection, _PG_INSTALL)
    elif connection.vendor == "sqlite":
        _run(connection, _SQLITE_INSTALL)
    else:
        raise RuntimeError(f"No append-only triggers for the {connection.vendor} database.")


def drop(connection: Any) -> None:
    if connection.vendor == "postgresql":
        _run(connection, _PG_DROP)
    elif connection.vendor == "sqlite":
        _run(connection, _SQLITE_DROP)
