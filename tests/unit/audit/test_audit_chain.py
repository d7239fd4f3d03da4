from __future__ import annotations

import json

import pytest
from django.db import IntegrityError, InternalError, connection, transaction
from django.db.utils import DatabaseError

from gdpr_requests.audit import chain as audit
from gdpr_requests.audit import triggers as audit_triggers
from gdpr_requests.audit.chain import Actor, audit_record, verify_database
from gdpr_requests.models import AuditEvent

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
