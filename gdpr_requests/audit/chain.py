"""The audit trail: the only writer of AuditEvent rows, the hash chain, and its verification.

Each event stores ``prev_hash`` and ``hash = HMAC-SHA256(AUDIT_CHAIN_KEY, prev_hash + canonical JSON)``, where
the canonical JSON holds the event's fields except ``sequence`` and the hashes, with sorted keys, no spaces, and
``occurred_at`` in UTC ISO 8601 with microseconds. The first event's ``prev_hash`` is 64 zeros. The sequence is
left out of the HMAC so that a verifier can tell a reordered or renumbered event from an edited one.

Every append also moves the chain head checkpoint (AuditChainHead: the last sequence and its hash, one row in a
table of its own that the database lets move forward only) in the same transaction. Deleting the newest events
leaves the checkpoint past the table's end, which ``verify_database`` reports; ``chain_head`` returns the
checkpoint, for copies held outside the database (metrics, export headers, evidence packs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from gdpr_requests.audit import triggers
from gdpr_requests.models import ActorType, AuditChainHead, AuditEvent
from gdpr_requests.server_binding import binary_parameters

GENESIS_HASH = "0" * 64
# Arbitrary constant naming the PostgreSQL advisory lock that serialises appends to the chain.
_CHAIN_LOCK_ID = 0x6D7064737221

# Keys that would put personal data or secrets into the trail. Payloads carry counts, references, hashes.
FORBIDDEN_PAYLOAD_KEYS = frozenset(
    {
        "email",
        "requester_email",
        "name",
        "requester_name",
        "distinct_id",
        "distinct_ids",
        "token",
        "oauth_token",
        "project_token",
        "api_secret",
        "password",
        "message",
        "url",
        "result_url",
    }
)

HASHED_FIELDS = ("occurred_at", "actor_type", "actor_id", "actor_label", "action", "request_reference", "payload")


@dataclass(frozen=True)
class Actor:
    """Who did something: staff user, the data subject, the system, or an auditor."""

    type: str
    id: str = ""
    label: str = ""

    @property
    def user_pk(self) -> int | None:
        """The primary key of the user behind this actor (staff, auditor), or None (system, data subject)."""
        return int(self.id) if self.id else None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(ActorType.SYSTEM, "", label)

    @classmethod
    def subject(cls) -> Actor:
        return cls(ActorType.SUBJECT, "", "data subject")

    @classmethod
    def staff(cls, user: Any) -> Actor:
        return cls(ActorType.STAFF, str(user.pk), user.get_username())

    @classmethod
    def auditor(cls, user: Any) -> Actor:
        return cls(ActorType.AUDITOR, str(user.pk), user.get_username())

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        """Staff unless the user is only an auditor."""
        names = set(user.groups.values_list("name", flat=True))
        if "Auditors" in names and "Privacy staff" not in names and not user.is_superuser:
            return cls.auditor(user)
        return cls.staff(user)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes covered by the HMAC for one event record (a dict with HASHED_FIELDS)."""
    body = {name: record[name] for name in HASHED_FIELDS}
    if isinstance(body["occurred_at"], datetime):
        body["occurred_at"] = _iso(body["occurred_at"])
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(prev_hash: str, record: dict[str, Any], *, key: bytes | None = None) -> str:
    key = key if key is not None else settings.AUDIT_CHAIN_KEY.encode()
    return hmac.new(key, prev_hash.encode() + canonical(record), hashlib.sha256).hexdigest()


def _check_payload(payload: dict[str, Any], path: str = "") -> None:
    for name, value in payload.items():
        if name.lower() in FORBIDDEN_PAYLOAD_KEYS:
            raise ValueError(f"Audit payload key {path}{name!r} would record personal data or a secret.")
        if isinstance(value, dict):
            _check_payload(value, f"{path}{name}.")


@dataclass(frozen=True)
class Entry:
    """One event to append with audit_record_many (the arguments of audit_record)."""

    action: str
    actor: Actor
    request_reference: str = ""
    payload: dict[str, Any] | None = None


def audit_record(
    *, action: str, actor: Actor, request_reference: str = "", payload: dict[str, Any] | None = None
) -> AuditEvent:
    """Append one event to the chain. Call it inside the transaction of the change it records."""
    return audit_record_many([Entry(action, actor, request_reference, payload)])[0]


def audit_record_many(entries: Sequence[Entry]) -> list[AuditEvent]:
    """Append several events, in order, under one hold of the chain lock and with one INSERT.

    Call it inside the transaction of the changes it records. The events are chained exactly as if each had
    been appended by audit_record: a batch of intake submissions costs the chain one lock, two reads of its
    head (the table's last event and the checkpoint), one INSERT and one checkpoint write, whatever its size.
    """
    # Checked and round-tripped through JSON before the lock, so the hash covers exactly what the database
    # will return and a refused payload never waits for the chain.
    prepared = []
    for entry in entries:
        payload = entry.payload or {}
        _check_payload(payload)
        prepared.append((entry, json.loads(json.dumps(payload, default=str))))
    if not prepared:
        return []
    # No savepoint when nested: a failure here fails the caller's transaction anyway, and the chain lock is held
    # until that transaction commits, so every round trip saved here shortens the queue behind it.
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # The transaction's deferred foreign-key checks run now, before the chain lock, not at COMMIT
                # while holding it: a check waits for a key-share lock on the referenced row, and whoever holds
                # that row (a staff action's SELECT ... FOR UPDATE) may be queued behind this lock: a deadlock.
                # Then the lock, in the same round trip (the id is our constant, not input).
                cursor.execute(
                    "SET CONSTRAINTS ALL IMMEDIATE; SET CONSTRAINTS ALL DEFERRED; "
                    f"SELECT pg_advisory_xact_lock({int(_CHAIN_LOCK_ID)})"
                )
        # On SQLite the IMMEDIATE transaction already holds the database's write lock.
        table_head, checkpoint = _heads()
        # The further of the two: after the newest events were deleted, new ones link on from the checkpoint,
        # so the gap stays in the chain for verification to report instead of being written over.
        last_sequence, prev_hash = max(
            (head for head in (table_head, checkpoint) if head is not None),
            key=lambda head: head[0],
            default=(0, GENESIS_HASH),
        )
        sequence = last_sequence + 1
        key = settings.AUDIT_CHAIN_KEY.encode()  # once per batch, not once per event
        events = []
        for entry, payload in prepared:
            # Microseconds survive both databases; the HMAC covers the value as stored.
            record = {
                "occurred_at": timezone.now(),
                "actor_type": str(entry.actor.type),
                "actor_id": entry.actor.id,
                "actor_label": entry.actor.label,
                "action": entry.action,
                "request_reference": entry.request_reference,
                "payload": payload,
            }
            digest = compute_hash(prev_hash, record, key=key)
            events.append(AuditEvent(sequence=sequence, prev_hash=prev_hash, hash=digest, **record))
            sequence, prev_hash = sequence + 1, digest
        with binary_parameters():
            created = AuditEvent.objects.bulk_create(events)
        # Once per batch, like the lock: the head is the batch's last event.
        if checkpoint is None:
            AuditChainHead.objects.create(id=1, sequence=sequence - 1, hash=prev_hash)
        else:
            AuditChainHead.objects.filter(pk=1).update(sequence=sequence - 1, hash=prev_hash)
        return created


def event_record(event: AuditEvent) -> dict[str, Any]:
    """The exported form of an event: everything a verifier needs, nothing more."""
    return {
        "sequence": event.sequence,
        "occurred_at": _iso(event.occurred_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "request_reference": event.request_reference,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


RECORD_FIELDS = ("sequence", *HASHED_FIELDS, "prev_hash", "hash")


def iter_records(queryset: Any = None, *, chunk_size: int = 5000) -> Iterator[dict[str, Any]]:
    """Stream event records in sequence order without loading the table."""
    queryset = AuditEvent.objects.all() if queryset is None else queryset
    for row in queryset.order_by("sequence").values_list(*RECORD_FIELDS).iterator(chunk_size=chunk_size):
        record = dict(zip(RECORD_FIELDS, row, strict=True))
        record["occurred_at"] = _iso(record["occurred_at"])
        yield record


def _table_head() -> tuple[int, str] | None:
    """(sequence, hash) of the last event in the table, or None for an empty table."""
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    return (last[0], last[1]) if last else None


def _checkpoint() -> tuple[int, str] | None:
    """(sequence, hash) of the chain head checkpoint, or None before the first event."""
    row = AuditChainHead.objects.filter(pk=1).values_list("sequence", "hash").first()
    return (row[0], row[1]) if row else None


def _heads() -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
    """``(_table_head(), _checkpoint())`` in one statement: one round trip less while the chain lock is held,
    and no ORM query to build twice per append."""
    with connection.cursor() as cursor:
        cursor.execute(_heads_sql())
        rows = {which: (sequence, digest) for which, sequence, digest in cursor.fetchall()}
    return rows.get(0), rows.get(1)


_HEADS_SQL: str | None = None


def _heads_sql() -> str:
    global _HEADS_SQL
    if _HEADS_SQL is None:
        quote = connection.ops.quote_name
        events, head = quote(AuditEvent._meta.db_table), quote(AuditChainHead._meta.db_table)
        # The subquery keeps ORDER BY and LIMIT to the events' half of the UNION on SQLite as on PostgreSQL.
        # (A statement of its own after the lock's: one that waited for the lock would read with an older
        # snapshot.) Table names come from the models, quoted; nothing else is interpolated.
        _HEADS_SQL = (
            f"SELECT 0, sequence, hash FROM (SELECT sequence, hash FROM {events} ORDER BY sequence DESC LIMIT 1)"  # noqa: S608
            f" AS last_event UNION ALL SELECT 1, sequence, hash FROM {head} WHERE id = 1"
        )
    return _HEADS_SQL


def chain_head() -> tuple[int, str]:
    """(number of the last event, its hash) as the checkpoint records it, or (0, genesis) for an empty trail.

    The checkpoint, not the table's last row: deleting the newest events does not move it back. Publish it
    (digest, metrics, evidence packs) so that a later truncation can be shown against a copy held elsewhere.
    """
    return _checkpoint() or _table_head() or (0, GENESIS_HASH)


# --- Verification -------------------------------------------------------------------------------------
EDITED = "edited"
MISSING = "missing"
REORDERED = "reordered"
INSERTED = "inserted"
TRUNCATED = "truncated"
UNPROTECTED = "unprotected"


@dataclass
class VerifyResult:
    ok: bool
    count: int
    head: str
    broken_sequence: int | None = None
    reason: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    last_sequence: int = 0

    def fail(self, sequence: int | None, reason: str, detail: str) -> VerifyResult:
        """This result, turned into a failure found after the chain itself checked out."""
        return VerifyResult(False, self.count, self.head, sequence, reason, detail, last_sequence=self.last_sequence)

    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.count} events, head {self.head}"
        if self.broken_sequence is None:
            return f"BROKEN: {self.reason}: {self.detail}"
        return f"BROKEN at event {self.broken_sequence}: {self.reason}: {self.detail}"


def verify_records(
    records: Iterable[dict[str, Any]],
    *,
    hash_exists: Callable[[str], bool] | None = None,
    key: bytes | None = None,
    start_prev_hash: str | None = None,
    first_sequence: int | None = None,
    check_links: bool = True,
) -> VerifyResult:
    """Recompute the chain over records in sequence order and name the first broken event.

    ``hash_exists`` tells whether some event anywhere carries a given hash (to tell a reordered event from a
    missing one). ``start_prev_hash`` lets a partial export (one that begins after event 1) be checked from its
    first record; ``first_sequence`` is the sequence the records must start at (1 for the whole trail, so that
    deleting the oldest events is caught); ``check_links=False`` checks each event's own HMAC only (a filtered
    export has gaps).
    """
    key = key if key is not None else settings.AUDIT_CHAIN_KEY.encode()
    iterator = iter(records)
    current = next(iterator, None)
    if current is None:
        return VerifyResult(ok=True, count=0, head=start_prev_hash or GENESIS_HASH)
    prev_hash = (
        start_prev_hash
        if start_prev_hash is not None
        else (GENESIS_HASH if current["sequence"] == 1 else current["prev_hash"])
    )
    expected = current["sequence"] if first_sequence is None else first_sequence
    count = 0
    while current is not None:
        following = next(iterator, None)
        seq = current["sequence"]
        if check_links and seq != expected:
            if seq > expected:
                return VerifyResult(
                    False, count, prev_hash, expected, MISSING, f"events {expected} to {seq - 1} are missing (deleted)"
                )
            return VerifyResult(False, count, prev_hash, seq, INSERTED, f"sequence {seq} appears twice or out of order")
        content_ok = hmac.compare_digest(compute_hash(current["prev_hash"], current, key=key), current["hash"])
        link_ok = current["prev_hash"] == prev_hash
        if not content_ok:
            if check_links and following is not None and following["prev_hash"] == prev_hash and link_ok:
                return VerifyResult(
                    False,
                    count,
                    prev_hash,
                    seq,
                    INSERTED,
                    "this event is not part of the chain (the next event links past it)",
                )
            return VerifyResult(
                False,
                count,
                prev_hash,
                seq,
                EDITED,
                "its contents do not match its hash (changed after it was written)",
            )
        if check_links and not link_ok:
            if hash_exists is not None and hash_exists(current["prev_hash"]):
                return VerifyResult(
                    False,
                    count,
                    prev_hash,
                    seq,
                    REORDERED,
                    "it links to an event that is elsewhere in the chain (events were moved)",
                )
            return VerifyResult(False, count, prev_hash, seq, MISSING, "the event it links to is missing (deleted)")
        prev_hash = current["hash"]
        count += 1
        expected = seq + 1
        current = following
    return VerifyResult(ok=True, count=count, head=prev_hash, last_sequence=expected - 1)


def verify_database(*, key: bytes | None = None) -> VerifyResult:
    """Verify the whole trail in the database: the chain from event 1, its end against the chain head
    checkpoint, and that the triggers protecting both are in place (present and enabled)."""
    result = verify_records(
        iter_records(),
        hash_exists=lambda value: AuditEvent.objects.filter(hash=value).exists(),
        key=key,
        start_prev_hash=GENESIS_HASH,
        first_sequence=1,
    )
    if not result.ok:
        return result
    result = _check_checkpoint(result)
    if not result.ok:
        return result
    absent = triggers.missing(connection)
    if absent:
        detail = f"the database triggers that keep the trail append-only are missing or disabled: {', '.join(absent)}"
        return result.fail(None, UNPROTECTED, detail)
    return result


def _missing_at_end(result: VerifyResult, head_sequence: int, anchor: str) -> VerifyResult:
    """A failure when ``anchor`` (where the head was recorded) names a head past the events' end, else result."""
    last = result.last_sequence
    if head_sequence <= last:
        return result
    gone = head_sequence - last
    detail = f"{gone} event{'s' if gone != 1 else ''} missing at the end ({anchor} is event {head_sequence})"
    return result.fail(last + 1, TRUNCATED, detail)


def _check_checkpoint(result: VerifyResult) -> VerifyResult:
    """An intact chain must end where the checkpoint says the head is."""
    checkpoint = _checkpoint()
    last = result.last_sequence
    if checkpoint is None:
        return result if last == 0 else result.fail(None, TRUNCATED, "the chain head checkpoint is missing (deleted)")
    head_sequence, head_hash = checkpoint
    if head_sequence < last:
        detail = f"the trail goes past the chain head checkpoint (event {head_sequence}): events were added around it"
        return result.fail(head_sequence + 1, INSERTED, detail)
    if head_sequence == last and not hmac.compare_digest(head_hash, result.head):
        return result.fail(last, EDITED, "the last event's hash differs from the chain head checkpoint")
    return _missing_at_end(result, head_sequence, "the chain head checkpoint")


def verify_file(path: str, *, key: bytes | None = None) -> VerifyResult:
    """Verify a JSON Lines export without the database: event lines, plus optional header/footer lines.

    A header line ``{"record_type": "header", ...}`` may carry ``start_prev_hash`` (the hash before the first
    exported event) and ``filtered`` (true when events were left out by a filter: links are then not checked).
    """
    header: dict[str, Any] = {}
    footer: dict[str, Any] = {}

    def events() -> Iterator[dict[str, Any]]:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number} is not JSON: {exc.msg}") from None
                record_type = data.get("record_type", "event")
                if record_type == "header":
                    header.update(data)
                elif record_type == "footer":
                    footer.update(data)
                else:
                    missing = [name for name in RECORD_FIELDS if name not in data]
                    if missing:
                        raise ValueError(f"line {number} lacks {', '.join(missing)}")
                    yield data

    # Peek at the header before verification starts (it is the first line when present).
    first_events = events()
    first = next(first_events, None)
    records = [] if first is None else _chain_first(first, first_events)
    hashes: set[str] | None = None

    def hash_exists(value: str) -> bool:
        nonlocal hashes
        if hashes is None:
            hashes = {record["hash"] for record in events()}
        return value in hashes

    result = verify_records(
        records,
        hash_exists=hash_exists,
        key=key,
        start_prev_hash=header.get("start_prev_hash"),
        check_links=not header.get("filtered", False),
    )
    if not result.ok:
        return result
    if footer.get("last_hash") and footer["last_hash"] != result.head:
        return result.fail(None, TRUNCATED, "the footer names a last hash that the events do not reach")
    filters = header.get("filters") or {}
    if header.get("filtered", False) or filters.get("since") or filters.get("until"):
        return result
    return _missing_at_end(result, (header.get("chain_head") or {}).get("sequence") or 0, "the header's chain head")


def _chain_first(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest
