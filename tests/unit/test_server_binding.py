"""Binary parameters for the bulk INSERTs of intake (gdpr_requests/server_binding.py): the rows stored are the
rows Django's own client-side binding stores, for every column type a request and an audit event have."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, Entry, audit_record_many, verify_database
from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests.services import prepare_request
from gdpr_requests.server_binding import binary_parameters

pytestmark = pytest.mark.django_db
SET_BY_THE_DATABASE_OR_DRAWN = {"id", "reference", "created_at", "updated_at", "link_nonce"}


def _pair(**changes) -> list[DataSubjectRequest]:
    """Two identical unsaved requests (but for their references), with ``changes`` applied to both."""
    moment = timezone.now() - timedelta(days=3, microseconds=1)
    # Times that prepare_request would take from the clock, the same for both.
    changes = {"verified_at": moment + timedelta(seconds=1), "status_changed_at": moment, **changes}
    made = []
    for reference in ("DSR-TEST-000A", "DSR-TEST-000B"):
        dsr = prepare_request(
            kind="access",
            regulation="ccpa",
            email="Person@Example.org",
            name='Zoë "quoted", back\\slash, {braces}',
            distinct_ids=["id,with,commas", 'id"quote', "id{brace}"],
            channel="api",
            received_at=moment,
            verified_by_staff="checked: passport, 100% sure",
            actor=Actor.system("test"),
        )
        dsr.reference = reference
        for name, value in changes.items():
            setattr(dsr, name, value)
        made.append(dsr)
    return made


def _stored(reference: str) -> dict:
    row = DataSubjectRequest.objects.filter(reference=reference).values().get()
    return {name: value for name, value in row.items() if name not in SET_BY_THE_DATABASE_OR_DRAWN}


@pytest.mark.parametrize("batch", [1, 3], ids=["one row (VALUES)", "several rows (UNNEST)"])
def test_rows_bound_in_binary_equal_rows_bound_by_django(require_postgres, batch):
    extended = timezone.now() - timedelta(hours=1)
    plain, binary = _pair(extended_at=extended, external_id=None, closed_at=None, message="a\nmessage\twith tabs")
    fillers = [_pair()[0] for _ in range(batch - 1)]
    for index, filler in enumerate(fillers):
        filler.reference = f"DSR-FILL-{index:04d}"
    DataSubjectRequest.objects.bulk_create([plain, *fillers[: len(fillers) // 2]])
    with binary_parameters():
        DataSubjectRequest.objects.bulk_create([binary, *fillers[len(fillers) // 2 :]])
    assert binary.pk is not None and binary.pk != plain.pk  # primary keys came back, as bulk_create promises
    assert _stored(binary.reference) == _stored(plain.reference)
    assert _stored(binary.reference)["distinct_ids"] == ["id,with,commas", 'id"quote', "id{brace}"]
    assert _stored(binary.reference)["original_due_at"] == plain.original_due_at
    assert isinstance(plain.original_due_at, date)


def test_the_audit_chain_written_in_binary_verifies(require_postgres):
    actor = Actor.system("test")
    entries = [
        Entry(
            "test.binary", actor, "DSR-TEST-0001", {"text": 'quote " comma , brace {', "n": 1, "nested": {"ok": True}}
        ),
        Entry("test.binary", actor, "", {"unicode": "Zoë ✓", "none": None, "list": [1, "two"]}),
    ]
    with transaction.atomic():
        written = audit_record_many(entries)
    stored = list(AuditEvent.objects.filter(pk__in=[e.pk for e in written]).order_by("sequence"))
    assert [e.payload for e in stored] == [entry.payload for entry in entries]
    assert verify_database().ok


def test_other_statements_keep_djangos_binding_and_a_literal_percent_survives(require_postgres):
    with binary_parameters(), connection.cursor() as cursor:
        cursor.execute("SELECT '100%%', %s::int, %s::text", [5, "50%"])
        assert cursor.fetchone() == ("100%", 5, "50%")
    assert type(connection.connection.cursor()).__name__ == "Cursor"  # client-side binding again afterwards


def test_on_sqlite_it_changes_nothing(settings):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite branch")
    with binary_parameters(), connection.cursor() as cursor:
        cursor.execute("SELECT %s", [7])
        assert cursor.fetchone() == (7,)
