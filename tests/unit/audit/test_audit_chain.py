from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from django.db import IntegrityError, InternalError, connection, transaction
from django.db.utils import DatabaseError

from gdpr_requests.audit import chain as audit
from gdpr_requests.audit import triggers as audit_triggers
from gdpr_requests.audit.chain import Actor, audit_record, verify_database
from gdpr_requests.models import AuditChainHead, AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _write(n: int) -> list[AuditEvent]:
    with transaction.atomic():
        return [
            audit_record(
                action=f"test.{i}",
                actor=Actor.system(),
                request_reference="DSR-TEST-0001",
                payload={"i": i, "text": "naïve — 東京"},
            )
            for i in range(1, n + 1)
        ]


def _raw(sql: str, params: list | None = None) -> None:
    """Tamper as an attacker with database access would: drop the triggers, change rows, put them back."""
    with transaction.atomic():
        audit_triggers.drop(connection)
        with connection.cursor() as cursor:
            cursor.execute(sql, params or [])
        audit_triggers.install(connection)


def test_an_intact_chain_verifies_and_reports_its_head():
    events = _write(5)
    result = verify_database()
    assert result.ok
    assert result.summary() == f"OK: 5 events, head {events[-1].hash}"


def test_each_event_links_to_the_previous_hash():
    events = _write(3)
    assert events[0].prev_hash == audit.GENESIS_HASH
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]


@pytest.mark.parametrize("statement", ["UPDATE {t} SET action = 'x'", "DELETE FROM {t}"])
def test_the_database_refuses_update_and_delete(statement):
    _write(2)
    with (
        pytest.raises((IntegrityError, InternalError, DatabaseError)),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement.format(t=audit_triggers.TABLE))
    assert AuditEvent.objects.count() == 2


def test_orm_update_of_an_event_is_refused():
    _write(1)
    with pytest.raises((IntegrityError, InternalError, DatabaseError)), transaction.atomic():
        AuditEvent.objects.filter(sequence=1).update(action="forged")


def test_an_edited_event_is_named():
    _write(5)
    payload = json.dumps({"i": 99, "text": "changed"})
    _raw(f"UPDATE {audit_triggers.TABLE} SET payload = %s WHERE sequence = 3", [payload])
    result = verify_database()
    assert not result.ok
    assert (result.broken_sequence, result.reason) == (3, audit.EDITED)


def test_a_deleted_event_is_named():
    _write(5)
    _raw(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence = 2")
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, 2, audit.MISSING)


def test_a_deleted_event_with_renumbered_successors_is_named():
    _write(5)
    _raw(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence = 2")
    for seq in (3, 4, 5):
        _raw(f"UPDATE {audit_triggers.TABLE} SET sequence = %s WHERE sequence = %s", [seq - 1, seq])
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, 2, audit.MISSING)


def test_reordered_events_are_named():
    _write(5)
    _raw(f"UPDATE {audit_triggers.TABLE} SET sequence = 100 WHERE sequence = 3")
    _raw(f"UPDATE {audit_triggers.TABLE} SET sequence = 3 WHERE sequence = 4")
    _raw(f"UPDATE {audit_triggers.TABLE} SET sequence = 4 WHERE sequence = 100")
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, 3, audit.REORDERED)


def test_an_inserted_event_is_named():
    events = _write(4)
    for seq in (4, 3):
        _raw(f"UPDATE {audit_triggers.TABLE} SET sequence = %s WHERE sequence = %s", [seq + 1, seq])
    forged = events[1]
    _raw(
        f"INSERT INTO {audit_triggers.TABLE} (sequence, occurred_at, actor_type, actor_id, actor_label, action, "
        "request_reference, payload, prev_hash, hash) VALUES (3, %s, 'staff', '', 'mallory', 'request.approve', "
        "'DSR-TEST-0001', %s, %s, %s)",
        [forged.occurred_at, json.dumps({}), forged.hash, "f" * 64],
    )
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, 3, audit.INSERTED)


def test_an_edited_last_event_is_named():
    # The last event has no successor whose link would expose it: its own hash must be checked too.
    _write(5)
    _raw(f"UPDATE {audit_triggers.TABLE} SET action = 'forged' WHERE sequence = 5")
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, 5, audit.EDITED)


def test_deleting_the_oldest_events_is_named():
    _write(5)
    _raw(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence <= 2")
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, 1, audit.MISSING)
    assert result.detail == "events 1 to 2 are missing (deleted)"


@pytest.mark.parametrize(("kept", "gone"), [(3, 2), (0, 5)])
def test_deleting_the_newest_events_is_named_against_the_checkpoint(kept, gone):
    _write(5)
    _raw(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence > %s", [kept])
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, kept + 1, audit.TRUNCATED)
    assert result.summary().startswith(f"BROKEN at event {kept + 1}: truncated: {gone} events missing at the end")


def test_appends_after_a_truncation_link_on_from_the_checkpoint_so_the_gap_stays_visible():
    events = _write(5)
    _raw(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence > 3")
    (after,) = _write(1)
    assert (after.sequence, after.prev_hash) == (6, events[-1].hash)
    result = verify_database()
    assert (result.ok, result.broken_sequence, result.reason) == (False, 4, audit.MISSING)


def test_a_deleted_checkpoint_is_named():
    _write(3)
    _raw(f"DELETE FROM {audit_triggers.HEAD_TABLE}")
    result = verify_database()
    assert (result.ok, result.reason) == (False, audit.TRUNCATED)
    assert result.summary() == "BROKEN: truncated: the chain head checkpoint is missing (deleted)"


def test_a_batch_moves_the_checkpoint_once_to_its_last_event(django_assert_num_queries):
    entries = [audit.Entry(f"test.{i}", Actor.system()) for i in range(4)]
    with transaction.atomic():
        created = audit.audit_record_many(entries)
    assert AuditChainHead.objects.values_list("sequence", "hash").get() == (4, created[-1].hash)
    more = [audit.Entry(f"test.more{i}", Actor.system()) for i in range(3)]
    # Lock (PostgreSQL only), read the table's head and the checkpoint in one statement, one INSERT, one
    # checkpoint UPDATE.
    expected = 4 if connection.vendor == "postgresql" else 3
    with transaction.atomic(), django_assert_num_queries(expected):
        created = audit.audit_record_many(more)
    assert audit.chain_head() == (7, created[-1].hash)
    assert verify_database().ok


def test_verification_fails_while_a_trigger_is_missing():
    _write(2)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {audit_triggers.TABLE} DISABLE TRIGGER auditevent_no_change")
        else:
            cursor.execute("DROP TRIGGER auditevent_no_replace")
    try:
        result = verify_database()
    finally:
        audit_triggers.install(connection)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {audit_triggers.TABLE} ENABLE TRIGGER auditevent_no_change")
    assert (result.ok, result.reason) == (False, audit.UNPROTECTED)
    assert "missing or disabled" in result.detail
    assert verify_database().ok


def test_the_event_hash_matches_a_known_answer():
    # Computed outside this code base (openssl dgst -sha256 -hmac) over the documented canonical form: 64 zeros,
    # then the fields as sorted, compact JSON with the time in UTC and microseconds. A change of the canonical
    # form, the key handling or the field set fails here even when the code still agrees with itself.
    record = {
        "occurred_at": datetime(2026, 1, 2, 5, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
        "actor_type": "staff",
        "actor_id": "7",
        "actor_label": "alice",
        "action": "request.approve",
        "request_reference": "DSR-2026-0001",
        "payload": {"projects": 2, "note": "naïve"},
    }
    assert (
        audit.canonical(record)
        == (
            '{"action":"request.approve","actor_id":"7","actor_label":"alice","actor_type":"staff",'
            '"occurred_at":"2026-01-02T03:04:05.678901+00:00","payload":{"note":"naïve","projects":2},'
            '"request_reference":"DSR-2026-0001"}'
        ).encode()
    )
    digest = audit.compute_hash(audit.GENESIS_HASH, record, key=b"known-answer-key")
    assert digest == "af345db3e7bde1c32859d5b5066e769d7721c2766133a30d0756d55949eb6e1b"


def test_a_different_key_fails_verification():
    _write(2)
    result = verify_database(key=b"another key")
    assert not result.ok and result.broken_sequence == 1


def test_concurrent_writers_keep_one_unbroken_chain():
    import threading

    from django.db import connections

    errors = []

    def writer(n):
        try:
            for i in range(10):
                with transaction.atomic():
                    audit_record(action="t", actor=Actor.system(), payload={"w": n, "i": i})
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = verify_database()
    assert result.ok and result.count == 30
