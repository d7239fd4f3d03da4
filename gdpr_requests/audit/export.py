"""Streaming export of the audit trail as JSON Lines or CSV (``manage.py audit export``, the auditor reports).

JSON Lines: a header line, one line per event with the fields of ``audit.event_record`` (so that
``audit.verify_file`` can recompute every HMAC without the database), and a footer line::

    {"record_type":"header","exported_at":...,"filters":{...},"filtered":false,"start_prev_hash":...,"chain_head":{...}}
    {"sequence":1,"occurred_at":"...","actor_type":"system",...,"prev_hash":"000...","hash":"..."}
    {"record_type":"footer","count":1,"last_hash":"..."}

CSV: a plain table for spreadsheets, the column names first and one row per event. The payload's common keys
(``from``, ``to``, ``method``...: PAYLOAD_COLUMNS, read out by the database) get columns of their own;
``payload_json`` keeps the whole payload as the database's one-line JSON text. Text cells that a spreadsheet would take for a formula (``=``,
``+``, ``-``, ``@``, tab, CR) get a leading ``'``. What the JSON Lines header and footer say (chain head,
filters, count, last hash) goes into a companion manifest (``export_manifest``, or the ``manifest`` dict that
``export_lines`` fills as it streams), so that no comment row is read as data.

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
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from gdpr_requests.audit import chain as audit
from gdpr_requests.models import AuditEvent

FORMATS = ("jsonl", "csv")
ROWS_PER_CHUNK = 1000
# Rows fetched from the database per round trip (a server-side cursor on PostgreSQL).
FETCH_SIZE = 5000

_EVENT_COLUMNS = (
    "sequence",
    "occurred_at",
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "request_reference",
)
# Payload keys that many actions share, as (column, key): the readable part of a payload in a spreadsheet.
PAYLOAD_COLUMNS = (
    ("from", "from"),
    ("to", "to"),
    ("method", "method"),
    ("channel", "channel"),
    ("kind", "kind"),
    ("regulation", "regulation"),
    ("status", "status"),
    ("task_id", "task_id"),
    ("project_pk", "project_pk"),
    ("count", "count"),
    ("why", "why"),
)
CSV_COLUMNS = (*_EVENT_COLUMNS, *(column for column, _key in PAYLOAD_COLUMNS), "payload_json", "prev_hash", "hash")
# A spreadsheet treats a cell starting with one of these as a formula (CSV injection); "" is the first
# character of an empty cell, which is safe.
_FORMULA_START = frozenset({"=", "+", "-", "@", "\t", "\r"})

_JSONL_EVENT = (
    '{"sequence":%d,"occurred_at":"%s","actor_type":%s,"actor_id":%s,"actor_label":%s,"action":%s,'
    '"request_reference":%s,"payload":%s,"prev_hash":%s,"hash":%s}\n'
)
_CSV_EVENT = '%d,%s,"%s","%s","%s","%s","%s",%s,"%s","%s","%s"\r\n'


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


def _rows(events: QuerySet[AuditEvent], *, payload_keys: tuple[str, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Event rows as tuples in RECORD_FIELDS order, with ``occurred_at`` and ``payload`` as JSON-ready text.

    ``payload_keys``: values of these payload keys, read by the database (``->>`` on PostgreSQL), come after
    the payload and before the hashes (None where a payload lacks the key).
    """
    on_postgresql = connections[events.db].vendor == "postgresql"
    # The payload as the database's own JSON text: parsing it and dumping it again is most of the cost of a
    # naive export. It is valid JSON with the same values, which is all the HMAC (over canonical JSON) needs.
    rows = (
        events.order_by("sequence")
        .annotate(
            payload_text=Cast("payload", output_field=TextField()),
            occurred_text=_UtcIsoText("occurred_at") if on_postgresql else F("occurred_at"),
            **{f"payload_key_{index}": KeyTextTransform(key, "payload") for index, key in enumerate(payload_keys)},
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
            *(f"payload_key_{index}" for index in range(len(payload_keys))),
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


_PAYLOAD_KEYS = tuple(key for _column, key in PAYLOAD_COLUMNS)


def _payload_cell(value: Any) -> str:
    """A payload value the database read out (text; a number on SQLite), as a quoted, formula-escaped cell."""
    if value is None:
        return '""'
    if not isinstance(value, str):
        value = str(value)
    if value[:1] in _FORMULA_START:
        value = "'" + value
    return '"' + value.replace('"', '""') + '"'


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
                ",".join([_payload_cell(value) for value in keys]),
                payload.replace('"', '""'),
                prev_hash.replace('"', '""'),
                hash_.replace('"', '""'),
            )
            for seq, at, actor_type, actor_id, actor_label, action, reference, payload, *keys, prev_hash, hash_ in chunk
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
    upto: int | None = None,
    manifest: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Stream the audit trail (or the part the filters select) as text chunks of about a thousand events.

    The export stops at the chain head read when it starts (or at event ``upto`` when that is earlier), so
    events appended meanwhile do not make the footer disagree with the header. ``manifest``, when given, is
    filled with what export_manifest describes (count and last hash once the stream is done). Raises
    ExportError for an unknown format or an inverted date range.
    """
    events, facts = _scope(fmt, since=since, until=until, action=action, reference=reference, actor=actor, upto=upto)
    if manifest is not None:
        manifest.update(facts)
    return _generate(fmt, events, facts, manifest)


def export_manifest(
    *,
    fmt: str,
    since: date | None = None,
    until: date | None = None,
    action: str = "",
    reference: str = "",
    actor: str = "",
    upto: int | None = None,
) -> dict[str, Any]:
    """What an export with the same arguments holds, without the rows: the companion of a CSV export.

    The chain head, the filters, the hash before the first event, the count of events and the last hash: with
    ``upto`` (the chain head sequence the export was made at) it describes exactly the rows of that export.
    """
    events, facts = _scope(fmt, since=since, until=until, action=action, reference=reference, actor=actor, upto=upto)
    last = events.order_by("-sequence").values_list("hash", flat=True).first()
    return {**facts, "count": events.count(), "last_hash": last or facts["start_prev_hash"]}


def _scope(
    fmt: str,
    *,
    since: date | None,
    until: date | None,
    action: str,
    reference: str,
    actor: str,
    upto: int | None,
) -> tuple[QuerySet[AuditEvent], dict[str, Any]]:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    if upto is not None and upto < 0:
        raise ExportError("The last sequence number cannot be negative.")
    events = filtered_events(since=since, until=until, action=action, reference=reference, actor=actor)
    head_sequence, head_hash = audit.chain_head()
    if upto is not None and upto < head_sequence:
        head_sequence = upto
        head_hash = AuditEvent.objects.filter(sequence=upto).values_list("hash", flat=True).first() or ""
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
    facts = {
        "record_type": "manifest",
        "format": fmt,
        "exported_at": timezone.now().astimezone(UTC).isoformat(timespec="seconds"),
        "filters": filters,
        "filtered": filtered,
        "start_prev_hash": start_prev_hash,
        "chain_head": {"sequence": head_sequence, "hash": head_hash},
    }
    if fmt == "csv":
        facts["columns"] = list(CSV_COLUMNS)
    return events, facts


def manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def _generate(
    fmt: str, events: QuerySet[AuditEvent], facts: dict[str, Any], manifest: dict[str, Any] | None
) -> Iterator[str]:
    count = 0
    last_hash = facts["start_prev_hash"]
    if fmt == "jsonl":
        header = {"record_type": "header", **{k: facts[k] for k in ("exported_at", "filters", "filtered")}}
        header |= {"start_prev_hash": facts["start_prev_hash"], "chain_head": facts["chain_head"]}
        yield json.dumps(header, separators=(",", ":")) + "\n"
        for chunk in _chunks(_rows(events)):
            count += len(chunk)
            last_hash = chunk[-1][-1]
            yield _jsonl_chunk(chunk)
        yield (
            json.dumps({"record_type": "footer", "count": count, "last_hash": last_hash}, separators=(",", ":")) + "\n"
        )
    else:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(CSV_COLUMNS)
        yield _take(buffer)
        for chunk in _chunks(_rows(events, payload_keys=_PAYLOAD_KEYS)):
            count += len(chunk)
            last_hash = chunk[-1][-1]
            yield _csv_chunk(chunk)
    if manifest is not None:
        manifest.update(count=count, last_hash=last_hash)
