"""Idempotency-Key: a retry within 24 h gets the first answer and creates nothing; another body is 422.

Call ``claim`` inside the transaction that does the work. A fresh key inserts its record at once; a concurrent
retry's INSERT (ON CONFLICT DO NOTHING) then waits on the unique index until the first transaction ends, and
finds the stored answer (or, if the first one failed and rolled back, takes the key over). Only successful answers are kept: a refused
request may be corrected and sent again with the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.utils import timezone
from rest_framework import serializers

from gdpr_requests.api.errors import Unprocessable
from gdpr_requests.models import ApiKey, IdempotencyRecord
from gdpr_requests.models.api import IDEMPOTENCY_WINDOW

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def body_hash(data: Any) -> str:
    """The hash of the parsed body, so that whitespace or key order does not make a retry look different."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def clean_key(value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_KEY_LENGTH or not value.isascii() or not value.isprintable():
        raise serializers.ValidationError({HEADER: [f"Use 1 to {MAX_KEY_LENGTH} printable ASCII characters."]})
    return value


@dataclass
class Claim:
    record: IdempotencyRecord
    replay: bool


def claim_many(wanted: Sequence[tuple[ApiKey, str, str]]) -> list[Claim]:
    """The records for several (api key, Idempotency-Key, body_hash) at once, in two queries: each new (do the
    work, then store the answer in it) or a replay of its stored answer. Raises Unprocessable when a stored
    answer was for another body. The keys must be distinct."""
    if not wanted:
        return []
    # Inserted in one order everywhere, so two batches holding the same keys cannot deadlock. On a conflict the
    # INSERT waits for the transaction that inserted the key to end; the row is then theirs (committed, with
    # its answer) or, if they rolled back, ours.
    ordered = sorted(wanted, key=lambda item: (item[0].pk, item[1]))
    IdempotencyRecord.objects.bulk_create(
        [IdempotencyRecord(api_key=api_key, key=key, body_hash=digest) for api_key, key, digest in ordered],
        ignore_conflicts=True,
    )
    match = Q()
    for api_key, key, _digest in wanted:
        match |= Q(api_key_id=api_key.pk, key=key)
    found = {(r.api_key_id, r.key): r for r in IdempotencyRecord.objects.select_for_update().filter(match)}
    return [_claim(found[(api_key.pk, key)], digest) for api_key, key, digest in wanted]


def _claim(record: IdempotencyRecord, digest: str) -> Claim:
    if not record.status_code:  # ours: no committed record is without its answer
        return Claim(record, replay=False)
    if record.created_at < timezone.now() - IDEMPOTENCY_WINDOW:  # expired: the key starts afresh
        record.body_hash, record.created_at, record.status_code, record.response = digest, timezone.now(), 0, {}
        return Claim(record, replay=False)
    if record.body_hash != digest:
        raise Unprocessable(f"This {HEADER} was already used with a different request body.")
    return Claim(record, replay=True)


def purge_expired() -> int:
    """Delete records past the window (the beat task api/tasks.py purge_idempotency_records)."""
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW).delete()
    return deleted
