"""The database keeps the trail append-only: no UPDATE, DELETE or replacing INSERT on events; a head checkpoint
that only moves forward; and ``missing`` notices a trigger that was dropped or disabled.

Run on SQLite by default and on PostgreSQL with DATABASE_URL set; vendor-specific statements say so.
"""

from __future__ import annotations

import json

import pytest
from django.db import DatabaseError, connection, transaction

from gdpr_requests.audit import triggers as audit_triggers
from gdpr_requests.audit.chain import Actor, audit_record, chain_head
from gdpr_requests.models import AuditChainHead, AuditEvent

pytestmark = pytest.mark.django_db

COLUMNS = (
    "id, sequence, occurred_at, actor_type, actor_id, actor_label, action, request_reference, payload, prev_hash, hash"
)


def _write(n: int) -> list[AuditEvent]:
    return [audit_record(action=f"test.{i}", actor=Actor.system(), payload={"i": i}) for i in range(1, n + 1)]


def _refused(sql: str, params: list | None = None) -> None:
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])


def _snapshot() -> list[tuple]:
    return list(AuditEvent.objects.order_by("sequence").values_list("id", "sequence", "action", "prev_hash", "hash"))


def _forged_row(template: AuditEvent, *, id: int, sequence: int, hash: str) -> list:
    return [
        id,
        sequence,
        template.occurred_at,
        "staff",
        "",
        "mallory",
        "request.approve",
        "",
        json.dumps({}),
        template.prev_hash,
        hash,
    ]


def sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite syntax")


# --- events: replacing inserts ---------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["INSERT OR REPLACE", "REPLACE"])
def test_sqlite_insert_or_replace_cannot_rewrite_an_event_in_place(verb):
    sqlite_only()
    events = _write(3)
    before = _snapshot()
    target = events[1]
    placeholders = ", ".join(["%s"] * 11)
    _refused(
        f"{verb} INTO {audit_triggers.TABLE} ({COLUMNS}) VALUES ({placeholders})",
        _forged_row(target, id=target.id, sequence=target.sequence, hash=target.hash),
    )
    assert _snapshot() == before


@pytest.mark.parametrize("collides_on", ["id", "sequence", "hash"])
def test_sqlite_insert_or_replace_cannot_remove_an_event_by_colliding_with_it(collides_on):
    # REPLACE deletes the colliding row without firing DELETE triggers: a new row that shares just one unique
    # value with event 2 would make event 2 disappear.
    sqlite_only()
    events = _write(3)
    before = _snapshot()
    victim = events[1]
    values = {"id": 10_000, "sequence": 10_000, "hash": "f" * 64}
    values[collides_on] = getattr(victim, collides_on)
    placeholders = ", ".join(["%s"] * 11)
    _refused(
        f"INSERT OR REPLACE INTO {audit_triggers.TABLE} ({COLUMNS}) VALUES ({placeholders})",
        _forged_row(victim, **values),
    )
    assert _snapshot() == before


@pytest.mark.parametrize("conflict_column", ["sequence", "hash"])
def test_insert_on_conflict_do_update_cannot_rewrite_an_event(conflict_column):
    # Both databases accept this upsert syntax; on PostgreSQL the UPDATE trigger refuses the DO UPDATE branch.
    events = _write(3)
    before = _snapshot()
    target = events[1]
    columns = COLUMNS.removeprefix("id, ")
    placeholders = ", ".join(["%s"] * 10)
    _refused(
        f"INSERT INTO {audit_triggers.TABLE} ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT ({conflict_column}) DO UPDATE SET action = excluded.action, actor_label = excluded.actor_label",
        _forged_row(target, id=0, sequence=target.sequence, hash=target.hash)[1:],
    )
    assert _snapshot() == before


def test_a_plain_append_still_goes_through_the_replace_guard():
    events = _write(3)
    assert [e.sequence for e in events] == [1, 2, 3]
    assert AuditEvent.objects.count() == 3


# --- the head checkpoint ---------------------------------------------------------------------------------
def test_every_append_moves_the_checkpoint_in_the_same_transaction():
    events = _write(2)
    assert chain_head() == (2, events[-1].hash)
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(action="test.rolled_back", actor=Actor.system())
        raise RuntimeError("the change it recorded failed")
    assert AuditChainHead.objects.values_list("sequence", "hash").get() == (2, events[-1].hash)


@pytest.mark.parametrize("new_sequence", [1, 3])
def test_the_checkpoint_cannot_move_back_or_stand_still(new_sequence):
    events = _write(3)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditChainHead.objects.filter(pk=1).update(sequence=new_sequence, hash=events[new_sequence - 1].hash)
    assert chain_head() == (3, events[-1].hash)


def test_the_checkpoint_cannot_be_deleted_or_doubled():
    events = _write(2)
    _refused(f"DELETE FROM {audit_triggers.HEAD_TABLE}")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditChainHead.objects.all().delete()
    # A second row, or one replacing the first (the upsert would move it back to event 1).
    _refused(f"INSERT INTO {audit_triggers.HEAD_TABLE} (id, sequence, hash) VALUES (2, 50, %s)", ["a" * 64])
    _refused(
        f"INSERT INTO {audit_triggers.HEAD_TABLE} (id, sequence, hash) VALUES (1, 1, %s) "
        "ON CONFLICT (id) DO UPDATE SET sequence = excluded.sequence, hash = excluded.hash",
        [events[0].hash],
    )
    if connection.vendor == "sqlite":
        _refused(
            f"INSERT OR REPLACE INTO {audit_triggers.HEAD_TABLE} (id, sequence, hash) VALUES (1, 1, %s)",
            [events[0].hash],
        )
    else:
        _refused(f"TRUNCATE {audit_triggers.HEAD_TABLE}")
    assert list(AuditChainHead.objects.values_list("id", "sequence", "hash")) == [(1, 2, events[-1].hash)]


def test_the_database_refuses_to_truncate_events_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    _write(2)
    _refused(f"TRUNCATE {audit_triggers.TABLE}")
    assert AuditEvent.objects.count() == 2


# --- missing ---------------------------------------------------------------------------------------------
def test_missing_is_empty_when_every_trigger_is_in_place():
    assert audit_triggers.missing(connection) == []
    assert "auditchainhead_no_delete" in audit_triggers.expected(connection) or connection.vendor == "postgresql"


def test_missing_names_a_dropped_trigger():
    # DDL is transactional on both databases: the test's rollback puts the trigger back.
    name = audit_triggers.expected(connection)[0]
    on_table = ""
    if connection.vendor == "postgresql":
        on_table = f" ON {audit_triggers._PG_TRIGGERS[name][0]}"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {name}{on_table}")
    assert audit_triggers.missing(connection) == [name]


def test_missing_names_a_disabled_trigger_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite triggers cannot be disabled, only dropped")
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {audit_triggers.TABLE} DISABLE TRIGGER auditevent_no_change")
    assert audit_triggers.missing(connection) == ["auditevent_no_change"]


def test_missing_names_a_trigger_replaced_by_one_that_lets_changes_through():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE OR REPLACE FUNCTION auditevent_refuse_change() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN RETURN NEW; END; $$"
            )
            altered = ["auditevent_no_change", "auditevent_no_truncate"]
        else:
            cursor.execute("DROP TRIGGER auditevent_no_delete")
            cursor.execute(
                f"CREATE TRIGGER auditevent_no_delete BEFORE DELETE ON {audit_triggers.TABLE} BEGIN SELECT 1; END"
            )
            altered = ["auditevent_no_delete"]
    assert audit_triggers.missing(connection) == altered
