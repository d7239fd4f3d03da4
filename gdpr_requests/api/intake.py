"""Creating requests through the API, with group commit: the creations that arrive together in one process
share one transaction (portal/group_commit.py explains the mechanism; the web form uses it the same way).

Why: every creation appends to the audit chain, whose lock is held from the append to the COMMIT, so
concurrent creations queue there one transaction at a time. In a batch they pay for the lock, the chain's
head, the INSERTs and the COMMIT once.

Each item is checked by the view's serializer first. In the batch's transaction, a few queries for the whole
batch: the Idempotency-Keys are claimed (a replay answers from the stored record), the external ids are locked
and checked, each row is built by services.prepare_request; then services.request_create_many saves the new rows (one call per API key and project
list, so the trail names each key) and the answers are stored for the Idempotency-Keys. Anything that fails a
batch (a 409, a 422, a second item with the same key in one batch) makes the committer run each item on its
own, so only its caller gets the error. A reference collision reruns the transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from gdpr_requests.api import idempotency
from gdpr_requests.api.errors import Conflict
from gdpr_requests.api.keys import actor_for_key
from gdpr_requests.api.serializers import request_links
from gdpr_requests.models import ApiKey, Channel, DataSubjectRequest, IdempotencyRecord
from gdpr_requests.portal.group_commit import GroupCommitter
from gdpr_requests.requests.services import REFERENCE_ATTEMPTS, ServiceError, prepare_request, request_create_many


@dataclass(frozen=True)
class Creation:
    """A checked POST: the key, the serializer's validated data, and its Idempotency-Key and body hash."""

    api_key: ApiKey
    values: dict[str, Any]
    idempotency_key: str | None = None
    body_hash: str = ""


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


class _SameKeyInBatch(Exception):
    """Two items of one batch carry the same Idempotency-Key or external id: they must run one after the other."""


def request_create_via_api(creation: Creation) -> Answer:
    """Create the request (or replay the Idempotency-Key's first answer). Raises Conflict, Unprocessable,
    ServiceError. Inside a transaction it runs in that transaction, alone."""
    if transaction.get_connection().in_atomic_block:
        return create_batch([creation])[0]
    return _committer.submit(creation)


def create_batch(items: list[Creation]) -> list[Answer]:
    for _attempt in range(REFERENCE_ATTEMPTS):
        try:
            return _create_batch(items)
        except IntegrityError:  # a reference drawn was taken (about one in a million): draw them all again
            continue
    raise ServiceError("Could not allocate a reference; try again.")


def _lock_external_ids(pairs: list[tuple[int, str]]) -> None:
    """Serialise creations that carry the same external id for the same key until the transaction ends, so the
    existence check before the INSERT cannot race; others do not wait. Locks are taken in one order, so two
    batches cannot deadlock. (SQLite's IMMEDIATE transactions serialise every write anyway.)"""
    if connection.vendor != "postgresql" or not pairs:
        return
    ids = sorted(
        int.from_bytes(hashlib.sha256(f"api-external-id:{pk}:{external_id}".encode()).digest()[:8], "big", signed=True)
        for pk, external_id in pairs
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(id) FROM unnest(%s::bigint[]) AS id ORDER BY id", [ids])


def _check_external_ids(pairs: list[tuple[int, str]]) -> None:
    """Conflict (409) naming the request that already carries one of these (key, external id) pairs."""
    if not pairs:
        return
    _lock_external_ids(pairs)
    match = Q()
    for pk, external_id in pairs:
        match |= Q(api_key_id=pk, external_id=external_id)
    taken = DataSubjectRequest.objects.filter(match).values_list("reference", flat=True)[:1]
    if taken:
        raise Conflict(f"external_id is already used by request {taken[0]}.", field="external_id")


def _unique(pairs: list[tuple[int, str]]) -> bool:
    return len(set(pairs)) == len(pairs)


def _create_batch(items: list[Creation]) -> list[Answer]:
    idempotency_keys = [(i.api_key.pk, i.idempotency_key) for i in items if i.idempotency_key]
    external_ids = [(i.api_key.pk, i.values["external_id"]) for i in items if i.values.get("external_id")]
    if not (_unique(idempotency_keys) and _unique(external_ids)):
        raise _SameKeyInBatch
    answers: list[Answer | None] = [None] * len(items)
    with transaction.atomic():
        keyed = [(index, item) for index, item in enumerate(items) if item.idempotency_key]
        claims = idempotency.claim_many([(i.api_key, i.idempotency_key or "", i.body_hash) for _, i in keyed])
        records: dict[int, IdempotencyRecord] = {}
        for (index, _item), claim in zip(keyed, claims, strict=True):
            if claim.replay:
                answers[index] = Answer(claim.record.status_code, claim.record.response, replayed=True)
            else:
                records[index] = claim.record
        todo = [(index, item) for index, item in enumerate(items) if answers[index] is None]
        _check_external_ids(
            [(item.api_key.pk, item.values["external_id"]) for _, item in todo if item.values.get("external_id")]
        )
        new: list[tuple[int, Creation, DataSubjectRequest, IdempotencyRecord | None]] = [
            (index, item, _prepare(item), records.get(index)) for index, item in todo
        ]
        # One request_create_many per API key and project list: the audit trail names each key as the actor.
        groups: dict[tuple[int, tuple[int, ...] | None], tuple[list[DataSubjectRequest], Any]] = {}
        for _index, item, dsr, _record in new:
            projects = item.values.get("projects")
            group = (item.api_key.pk, tuple(p.pk for p in projects) if projects is not None else None)
            groups.setdefault(group, ([], projects))[0].append(dsr)
        for rows, projects in groups.values():
            request_create_many(rows, actor=actor_for_key(rows[0].api_key), projects=projects, retry_in_savepoint=False)
        answered: list[IdempotencyRecord] = []
        for index, _item, dsr, record in new:
            body = {
                "reference": dsr.reference,
                "status": dsr.status,
                "due_at": dsr.due_at.isoformat(),
                "links": request_links(dsr),
            }
            answers[index] = Answer(201, body)
            if record is not None:
                record.status_code, record.response = 201, body
                answered.append(record)
        fields = ["status_code", "response", "body_hash", "created_at"]
        if len(answered) == 1:  # the usual case, and a plain UPDATE is cheaper than bulk_update's CASE
            record = answered[0]
            IdempotencyRecord.objects.filter(pk=record.pk).update(**{name: getattr(record, name) for name in fields})
        elif answered:
            IdempotencyRecord.objects.bulk_update(answered, fields)
    return [answer for answer in answers if answer is not None]


def _prepare(item: Creation) -> DataSubjectRequest:
    values, api_key = item.values, item.api_key
    dsr = prepare_request(
        kind=values["kind"],
        regulation=values["regulation"],
        email=values["email"],
        name=values["name"],
        distinct_ids=values["distinct_ids"],
        channel=Channel.API,
        received_at=values.get("received_at"),
        disclosure_type=values["disclosure_type"],
        verified_by_staff=values["identity_verified_by"].strip(),
        actor=actor_for_key(api_key),
    )
    dsr.api_key, dsr.external_id = api_key, values.get("external_id") or None
    return dsr


# Concurrent API creations in this process share one transaction.
_committer: GroupCommitter[Creation, Answer] = GroupCommitter(create_batch, max_batch=50)
