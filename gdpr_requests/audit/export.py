"""Streaming export of the audit trail as JSON Lines or CSV (``manage.py audit export``, the auditor reports).

JSON Lines: a header line, one line per event with the fields of ``audit.event_record`` (so that
``audit.verify_file`` can recompute every HMAC without the database), and a footer line::

    {"record_type":"header","exported_at":...,"filters":{...},"filtered":false,"start_prev_hash":...,"chain_head":{...}}
    {"sequence":1,"occurred_at":"...","actor_type":"system",...,"prev_hash":"000...","hash":"..."}
    {"record_type":"footer","count":1,"last_hash":"..."}

CSV: a ``# ...`` comment row (chain head, filters), the column names, one row per event, and a ``# end ...``
row with the count and the last hash. The payload cell is the database's own one-line JSON text (PostgreSQL
writes ``{"a": 1, "b": "x"}``): re-encoding it in Python would cost more than the rest of the export together.
Text cells that a spreadsheet would take for a formula (``=``, ``+``, ``-``, ``@``, tab, CR) get a leading ``'``.

The export is built for a million events: rows come from ``values_list(...).iterator()`` as tuples (no model
instances), the payload comes from the database as JSON text and is pasted into the line as it is, and text is
yielded in chunks of about a thousand rows so a file or an HTTP response receives few large writes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from json.encoder import encode_basestring  # the C implementation when available
from typing import Any

from django.db import connections
from django.db.models import F, Func, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from gdpr_requests.audit import chain as audit
from gdpr_requests.models import AuditEvent

FORMATS = ("jsonl", "csv")
ROWS_PER_CHUNK = 1000
# Rows fetched from the database per round trip (a server-side cursor on PostgreSQL).
FETCH_SIZE = 5000

CSV_COLUMNS = (
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
# A spreadsheet treats a cell starting with one of these as a formula (CSV injection); "" is the first
# character of an empty cell, which is safe.
_FORMULA_START = frozenset({"=", "+", "-", "@", "\t", "\r"})

_JSONL_EVENT = (
    '{"sequence":%d,"occurred_at":"%s","actor_type":%s,"actor_id":%s,"actor_label":%s,"action":%s,'
    '"request_reference":%s,"payload":%s,"prev_hash":%s,"hash":%s}\n'
)
_CSV_EVENT = '%d,%s,"%s","%s","%s","%s","%s","%s","%s","%s"\r\n'


class ExportError(ValueError):
    """Export parameters that make no sense (unknown format, a date range that ends before it starts)."""


def _day_start(day: date) -> datetime:
    """Midnight at the start of ``day`` in settings.TIME_ZONE."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def filtered_events(
    *, since: date | None = None, until: date | None = None, action: str = "", reference: str = "", actor: str = ""
) -> QuerySet[AuditEvent]:
    """Events matching the export filters. ``since`` and ``until`` are whole days, both included.

    ``action`` is an exact action name, or a prefix when it ends with ``*`` (``request.*``). ``actor`` matches
    an actor's label (a username, or the system component such as ``cli``) or an actor type (``staff``...).
    """
    if since and until and since > until:
        raise ExportError(f"The date range ends ({until}) before it starts ({since}).")
    events = AuditEvent.objects.all()
    if since:
        events = events.filter(occurred_at__gte=_day_start(since))
    if until:
        events = events.filter(occurred_at__lt=_day_start(until + timedelta(days=1)))
    if action:
        events = events.filter(action__startswith=action[:-1]) if action.endswith("*") else events.filter(action=action)
    if reference:
        events = events.filter(request_reference=reference.strip().upper())
    if actor:
        events = events.filter(Q(actor_label=actor) | Q(actor_type=actor))
    return events


class _UtcIsoText(Func):
    """``occurred_at`` as the text ``audit.event_record`` gives (UTC, microseconds, ``+00:00``).

    On PostgreSQL the database formats it: parsing a million timestamps into Python datetimes (Django's tz
    loader is pure Python) only to format them again was the largest cost of the export. Elsewhere the
    datetime comes back and is formatted in Python (see _rows).
    """

    output_field = TextField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
            **extra,
        )


def _rows(events: QuerySet[AuditEvent]) -> Iterator[tuple[Any, ...]]:
    """Event rows as tuples in RECORD_FIELDS order, with ``occurred_at`` and ``payload`` as JSON-ready text."""
    on_postgresql = connections[events.db].vendor == "postgresql"
    # The payload as the database's own JSON text: parsing it and dumping it again is most of the cost of a
    # naive export. It is valid JSON with the same values, which is all the HMAC (over canonical JSON) needs.
    rows = (
        events.order_by("sequence")
        .annotate(
            payload_text=Cast("payload", output_field=TextField()),
            occurred_text=_UtcIsoText("occurred_at") if on_postgresql else F("occurred_at"),
        )
        .values_list(
            "sequence",
            "occurred_text",
            "actor_type",
            "actor_id",
            "actor_label",
            "action",
            "request_reference",
            "payload_text",
            "prev_hash",
            "hash",
        )
        .iterator(chunk_size=FETCH_SIZE)
    )
    if on_postgresql:
        return rows
    return ((row[0], row[1].astimezone(UTC).isoformat(timespec="microseconds"), *row[2:]) for row in rows)


def _chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(islice(rows, ROWS_PER_CHUNK)):
        yield chunk


def _jsonl_chunk(chunk: list[tuple[Any, ...]]) -> str:
    enc = encode_basestring
    return "".join(
        [
            _JSONL_EVENT
            % (
                seq,
                at,
                enc(actor_type),
                enc(actor_id),
                enc(actor_label),
                enc(action),
                enc(reference),
                payload,
                enc(prev_hash),
                enc(hash_),
            )
            for seq, at, actor_type, actor_id, actor_label, action, reference, payload, prev_hash, hash_ in chunk
        ]
    )


def _csv_chunk(chunk: list[tuple[Any, ...]]) -> str:
    # Formatted by hand: csv.writer spent three times longer deciding how to quote each cell. Every text cell
    # is quoted (RFC 4180 allows it), so commas, quotes and line breaks inside values need no test. The
    # formula escape is inlined for the text columns an operator or a user name can influence; sequence,
    # times, payload JSON and hashes cannot start with a formula character.
    danger = _FORMULA_START
    return "".join(
        [
            _CSV_EVENT
            % (
                seq,
                at,
                actor_type.replace('"', '""'),
                (actor_id if actor_id[:1] not in danger else "'" + actor_id).replace('"', '""'),
                (actor_label if actor_label[:1] not in danger else "'" + actor_label).replace('"', '""'),
                (action if action[:1] not in danger else "'" + action).replace('"', '""'),
                (reference if reference[:1] not in danger else "'" + reference).replace('"', '""'),
                payload.replace('"', '""'),
                prev_hash.replace('"', '""'),
                hash_.replace('"', '""'),
            )
            for seq, at, actor_type, actor_id, actor_label, action, reference, payload, prev_hash, hash_ in chunk
        ]
    )


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def export_lines(
    *,
    fmt: str,
    since: date | None = None,
    until: date | None = None,
    action: str = "",
    reference: str = "",
    actor: str = "",
) -> Iterator[str]:
    """Stream the audit trail (or the part the filters select) as text chunks of about a thousand events.

    The export stops at the chain head read when it starts, so events appended meanwhile do not make the
    footer disagree with the header. Raises ExportError for an unknown format or an inverted date range.
    """
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    events = filtered_events(since=since, until=until, action=action, reference=reference, actor=actor)
    head_sequence, head_hash = audit.chain_head()
    events = events.filter(sequence__lte=head_sequence)
    filters = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "action": action or None,
        "reference": reference or None,
        "actor": actor or None,
    }
    # Filtering on anything but dates leaves gaps, so a verifier can check each event but not the links.
    filtered = bool(action or reference or actor)
    start_prev_hash = events.order_by("sequence").values_list("prev_hash", flat=True).first() or audit.GENESIS_HASH
    return _generate(fmt, events, filters, filtered, start_prev_hash, head_sequence, head_hash)


def _generate(
    fmt: str,
    events: QuerySet[AuditEvent],
    filters: dict[str, Any],
    filtered: bool,
    start_prev_hash: str,
    head_sequence: int,
    head_hash: str,
) -> Iterator[str]:
    count = 0
    last_hash = start_prev_hash
    exported_at = timezone.now().astimezone(UTC).isoformat(timespec="seconds")
    if fmt == "jsonl":
        header = {
            "record_type": "header",
            "exported_at": exported_at,
            "filters": filters,
            "filtered": filtered,
            "start_prev_hash": start_prev_hash,
            "chain_head": {"sequence": head_sequence, "hash": head_hash},
        }
        yield json.dumps(header, separators=(",", ":")) + "\n"
        for chunk in _chunks(_rows(events)):
            count += len(chunk)
            last_hash = chunk[-1][-1]
            yield _jsonl_chunk(chunk)
        yield (
            json.dumps({"record_type": "footer", "count": count, "last_hash": last_hash}, separators=(",", ":")) + "\n"
        )
        return

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    described = "; ".join(f"{name}={value}" for name, value in filters.items() if value) or "none"
    writer.writerow(
        [
            f"# audit trail export; exported_at {exported_at}; chain_head sequence {head_sequence} hash {head_hash}; "
            f"filters {described}; filtered {str(filtered).lower()}; start_prev_hash {start_prev_hash}"
        ]
    )
    writer.writerow(CSV_COLUMNS)
    yield _take(buffer)
    for chunk in _chunks(_rows(events)):
        count += len(chunk)
        last_hash = chunk[-1][-1]
        yield _csv_chunk(chunk)
    writer.writerow([f"# end; count {count}; last_hash {last_hash}"])
    yield buffer.getvalue()
