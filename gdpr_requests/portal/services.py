"""Writes made on behalf of the public portal: submission (with duplicate linking), fresh links, withdrawal,
one-time download codes and counted downloads.

Each is a keyword-only service that audits in its own transaction, like services.py (which it builds on).
Emails go out through notifications.notify_after_commit: ids and an event name only reach the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, Entry, audit_record, audit_record_many
from gdpr_requests.crypto import email_hash
from gdpr_requests.models import Channel, DataSubjectRequest, SubjectExport
from gdpr_requests.notifications.outbox import notify_after_commit, notify_many_after_commit
from gdpr_requests.portal.group_commit import GroupCommitter
from gdpr_requests.requests import services, states

# Resending links covers at most this many requests of one person (a person has one or two).
RESEND_MAX_REQUESTS = 5


@dataclass(frozen=True)
class Submission:
    request: DataSubjectRequest
    duplicate: bool


def _lock_emails(hashes: Iterable[str]) -> None:
    """Serialise submissions from one email so two quick ones cannot both miss the duplicate check.

    PostgreSQL: transaction-scoped advisory locks on the hashes, taken in one statement and in a fixed order
    (two batches sharing addresses cannot deadlock). SQLite's IMMEDIATE transaction already holds the
    database's write lock.
    """
    if connection.vendor == "postgresql":
        keys = sorted({int.from_bytes(bytes.fromhex(hashed[:16]), "big", signed=True) for hashed in hashes})
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(key) FROM unnest(%s::bigint[]) AS key ORDER BY key", [keys])


def open_duplicates(*, hashes: Iterable[str]) -> dict[tuple[str, str], DataSubjectRequest]:
    """The most recent open request per (email hash, kind) for these hashes within DSR_DUPLICATE_WINDOW_DAYS.

    Only the columns a duplicate answer needs are read (one query, whatever the number of hashes).
    """
    since = timezone.now() - timedelta(days=settings.DSR_DUPLICATE_WINDOW_DAYS)
    found: dict[tuple[str, str], DataSubjectRequest] = {}
    rows = (
        DataSubjectRequest.objects.filter(
            email_hash__in=set(hashes), status__in=states.OPEN_STATES, received_at__gte=since
        )
        .only("pk", "reference", "kind", "email_hash", "status")
        .order_by("-received_at", "-pk")
    )
    for dsr in rows:
        found.setdefault((dsr.email_hash, dsr.kind), dsr)
    return found


def request_submit(
    *,
    kind: str,
    regulation: str,
    email: str,
    name: str = "",
    distinct_ids: list[str] | tuple[str, ...] = (),
    disclosure_type: str = "",
    message: str = "",
    language: str = "",
) -> Submission:
    """Take a request from the web form, or link it to the person's open request of the same kind.

    A duplicate is not a new row: the existing request gets an audit event and the person an email with its
    status link. Either way one audit event is written and one email is queued, so the two paths cost the
    same and the response (made by the caller) cannot tell them apart.

    The submission is checked here (ServiceError) and committed by the process's group committer, together
    with any other submissions that arrive while a commit is in progress (see group_commit.py). Called inside
    a transaction, it is committed in that transaction, alone: another caller's submission never joins it.
    """
    pending = services.prepare_request(
        kind=kind,
        regulation=regulation,
        email=email,
        name=name,
        distinct_ids=distinct_ids,
        disclosure_type=disclosure_type,
        message=message,
        language=language,
        channel=Channel.WEB,
        actor=Actor.subject(),
    )
    if transaction.get_connection().in_atomic_block:
        return submit_batch([pending])[0]
    return _intake.submit(pending)


def submit_batch(pending: Sequence[DataSubjectRequest]) -> list[Submission]:
    """Commit submissions checked by services.prepare_request, in one transaction, in order.

    Each is a new request, or a duplicate of an open request of the same kind from the same address: one
    already in the database or one earlier in this batch. The transaction is run again, with new references,
    in the rare case that a reference drawn is taken (see services.REFERENCE_ATTEMPTS).

    The new requests' confirmation emails leave in one broker message; a batch that also holds duplicates
    queues their emails in a second one (duplicates are rare, and each email is queued exactly once).
    """
    for _attempt in range(services.REFERENCE_ATTEMPTS):
        try:
            return _submit_batch(pending)
        except IntegrityError:
            continue
    raise services.ServiceError("We could not take your request just now. Please try again.")


def _submit_batch(pending: Sequence[DataSubjectRequest]) -> list[Submission]:
    with transaction.atomic():
        _lock_emails(p.email_hash for p in pending)
        known = open_duplicates(hashes=[p.email_hash for p in pending])
        new: list[DataSubjectRequest] = []
        # Each submission is either new or a duplicate of the (possibly still unsaved) request at that key.
        plan: list[tuple[DataSubjectRequest, bool]] = []
        for dsr in pending:
            key = (dsr.email_hash, dsr.kind)
            if key in known:
                plan.append((known[key], True))
            else:
                known[key] = dsr
                new.append(dsr)
                plan.append((dsr, False))
        # Its intake hook queues the confirmations. No savepoint: a taken reference reruns this transaction.
        services.request_create_many(new, actor=Actor.subject(), retry_in_savepoint=False)
        duplicates = [
            (dsr, pending_dsr) for (dsr, is_duplicate), pending_dsr in zip(plan, pending, strict=True) if is_duplicate
        ]
        if duplicates:
            events = audit_record_many(
                [
                    Entry(
                        action="request.duplicate_submitted",
                        actor=Actor.subject(),
                        request_reference=dsr.reference,
                        payload={"channel": Channel.WEB, "kind": dsr.kind, "regulation": submitted.regulation},
                    )
                    for dsr, submitted in duplicates
                ]
            )
            notify_many_after_commit(
                [(dsr.pk, f"duplicate:{event.pk}") for (dsr, _submitted), event in zip(duplicates, events, strict=True)]
            )
    return [Submission(dsr, duplicate=is_duplicate) for dsr, is_duplicate in plan]


# Group commit for the web form: concurrent submissions in this process share one transaction.
_intake: GroupCommitter[DataSubjectRequest, Submission] = GroupCommitter(submit_batch, max_batch=50)


def resend_candidates(*, hashed: str) -> list[DataSubjectRequest]:
    """The requests of an email hash whose status page a new link would still open, most recent first.

    Open requests, and closed ones whose page is still worth reaching (closed less than DSR_STATUS_LINK_DAYS
    ago, personal data not yet purged): a completed access request's page is where its file is downloaded.
    """
    since = timezone.now() - timedelta(days=settings.DSR_STATUS_LINK_DAYS)
    return list(
        DataSubjectRequest.objects.filter(email_hash=hashed, purged_at__isnull=True)
        .filter(Q(status__in=states.OPEN_STATES) | Q(closed_at__gte=since))
        .order_by("-received_at", "-pk")[:RESEND_MAX_REQUESTS]
    )


def request_resend_links(*, email: str) -> int:
    """Queue fresh links for the requests of this email still reachable by link. Returns how many.

    Unverified requests get a new confirmation link, the others a new status link (which also leads to a
    completed access request's download). The new links are made when the email goes out
    (notifications.outbox), and the older ones stop working then: a stranger who asks for someone's links
    cannot revoke the ones that person holds without the new ones reaching them. Nothing tells the caller
    whether the email was known: the view shows the same page either way.
    """
    hashed = email_hash(email)
    sent = 0
    with transaction.atomic():
        matches = resend_candidates(hashed=hashed)
        for dsr in matches:
            event = audit_record(
                action="request.links_resent",
                actor=Actor.subject(),
                request_reference=dsr.reference,
                payload={"status": dsr.status},
            )
            notify_after_commit(request_id=dsr.pk, event=f"resend:{event.pk}")
            sent += 1
        if not matches:
            # Recorded so that probing for addresses shows up in the trail (and the path costs a write too).
            audit_record(action="portal.resend_unmatched", actor=Actor.subject(), payload={"email_hash": hashed[:16]})
    return sent


def request_withdraw(*, request: DataSubjectRequest) -> DataSubjectRequest:
    """The subject withdraws their request from the status page (ServiceError when it is too late)."""
    if request.status not in states.OPEN_STATES:
        raise services.ServiceError(services.withdrawal_blocker(request))
    return services.request_cancel(request=request, actor=Actor.subject(), reason="Withdrawn by the requester.")


# --- One-time download codes ----------------------------------------------------------------------------
def export_code_request(*, export: SubjectExport) -> None:
    """The subject asks for a download code: queue the email that carries a fresh one."""
    with transaction.atomic():
        event = audit_record(
            action="export.code_requested", actor=Actor.subject(), request_reference=export.request.reference
        )
        notify_after_commit(request_id=export.request_id, event=f"download_code:{event.pk}")
