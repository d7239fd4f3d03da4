"""Every write: intake, verification, transitions, extensions, assignment, notes.

Services take keyword-only arguments, validate, write, record the audit event in the same transaction and
return the object. A transition moves the row with a conditional UPDATE (``filter(pk, status=old)``): zero rows
means someone else moved it first, and the caller gets TransitionNotAllowed naming the state it is in now.
Processing (planning tasks, Mixpanel calls) lives in pipeline.py.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone, translation

from gdpr_requests.audit.chain import Actor, Entry, audit_record, audit_record_many
from gdpr_requests.crypto import email_hash
from gdpr_requests.models import (
    Channel,
    DataSubjectRequest,
    DisclosureType,
    MixpanelProject,
    Regulation,
    RequestKind,
    RequestNote,
)
from gdpr_requests.models.approvals import DeletionApproval, RejectionGround, RequestRejection
from gdpr_requests.requests import approval_rules, states
from gdpr_requests.server_binding import binary_parameters

# Crockford's base32 without I, L, O, U: easy to read aloud and to type. 32 symbols (new_reference relies on it).
REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MAX_DISTINCT_IDS = 50
# Draws of a request reference before giving up (a collision is about one in a million at a million requests).
REFERENCE_ATTEMPTS = 5
MAX_DISTINCT_ID_LENGTH = 255
# A request taken in without a language (staff entry, an import row without one) is answered in English.
DEFAULT_SUBJECT_LANGUAGE = "en"
# What prepare_request accepts, as sets built once: the enums' ``values`` build a new list at every read, and a
# cohort page prepares a thousand requests.
_KINDS = frozenset(RequestKind.values)
_REGULATIONS = frozenset(Regulation.values)
_CHANNELS = frozenset(Channel.values)
_DISCLOSURE_TYPES = frozenset(DisclosureType.values)
_CONTROL = re.compile("[\x00-\x1f]")  # characters below U+0020

# Hooks that other modules register so that the core stays free of their imports: called after commit with
# the request's primary key. (The pipeline plans approved requests; the portal sends emails.)
_after_transition_hooks: list[Callable[[int, str, str], None]] = []
_bulk_transition_hooks: dict[Callable[[int, str, str], None], Callable[[list[int], str, str], None]] = {}
# Called inside the transition's transaction (register_transition_recorder).
_transition_recorders: list[Callable[[list[int], str, str], None]] = []


_intake_hooks: list[Callable[[list[DataSubjectRequest]], None]] = []


def register_intake_hook(hook: Callable[[list[DataSubjectRequest]], None]) -> None:
    """``hook(requests)`` runs inside request_create_many's transaction with the new rows, for every channel
    (e.g. the confirmation emails)."""
    if hook not in _intake_hooks:
        _intake_hooks.append(hook)


def register_transition_hook(
    hook: Callable[[int, str, str], None], *, many: Callable[[list[int], str, str], None] | None = None
) -> None:
    """``hook(request_id, action, new_status)`` runs after the commit of every transition.

    ``many(request_ids, action, new_status)``, when given, stands in for the hook on a bulk transition (one
    call for the set instead of one per request: e.g. the pipeline sends a planning message per chunk).
    """
    if hook not in _after_transition_hooks:
        _after_transition_hooks.append(hook)
    if many is not None:
        _bulk_transition_hooks[hook] = many


def register_transition_recorder(recorder: Callable[[list[int], str, str], None]) -> None:
    """``recorder(request_ids, action, new_status)`` runs inside the transition's transaction, after its UPDATE
    and audit event: what it writes (an email due, a webhook delivery) commits with the transition or not at all.
    It is called once for a bulk transition."""
    if recorder not in _transition_recorders:
        _transition_recorders.append(recorder)


def _after_transition(request_ids: list[int], action: str, new_status: str) -> None:
    """Inside the transaction: run the recorders now and schedule the hooks for after the commit. A hook that
    raises does not stop the others (they are independent; the sweeps catch up)."""
    for recorder in list(_transition_recorders):
        recorder(request_ids, action, new_status)
    for hook in list(_after_transition_hooks):
        many = _bulk_transition_hooks.get(hook)
        if many is not None and len(request_ids) > 1:
            transaction.on_commit(partial(many, list(request_ids), action, new_status), robust=True)
        else:
            for request_id in request_ids:
                transaction.on_commit(partial(hook, request_id, action, new_status), robust=True)


def after_bulk_transition(request_ids: Sequence[int], action: str, new_status: str) -> None:
    """For requests moved in bulk (one set-based UPDATE), called inside its transaction: the recorders run now,
    once for the set; the hooks run after the commit (their bulk form when they have one)."""
    _after_transition(list(request_ids), action, new_status)


class ServiceError(Exception):
    """A request that the rules refuse, with a message fit to show a user."""


def _draw_references(requests: Iterable[DataSubjectRequest]) -> None:
    for dsr in requests:
        dsr.pk = None
        dsr.reference = new_reference()


def new_reference() -> str:
    # Eight symbols of five random bits each (the alphabet has exactly 32): uniform and independent, as eight
    # secrets.choice() would be, from one read of the system's random source instead of eight or more.
    bits = secrets.randbits(40)
    symbols = "".join(REFERENCE_ALPHABET[(bits >> shift) & 31] for shift in range(0, 40, 5))
    return f"DSR-{symbols[:4]}-{symbols[4:]}"


def clean_distinct_ids(values: Iterable[str]) -> list[str]:
    """Strip, drop blanks and duplicates (order kept), and refuse what Mixpanel could not take."""
    cleaned: list[str] = []
    for value in values:
        value = str(value).strip()
        if not value or value in cleaned:
            continue
        if len(value) > MAX_DISTINCT_ID_LENGTH:
            raise ServiceError(f"A distinct id is longer than {MAX_DISTINCT_ID_LENGTH} characters.")
        if _CONTROL.search(value):
            raise ServiceError("A distinct id contains control characters.")
        cleaned.append(value)
    if len(cleaned) > MAX_DISTINCT_IDS:
        raise ServiceError(f"At most {MAX_DISTINCT_IDS} distinct ids per request.")
    return cleaned


def _local_date(moment: datetime) -> date:
    return timezone.localtime(moment).date()


def subject_language(code: str) -> str:
    """The language of settings.LANGUAGES for ``code`` ("de-AT" gives "de"); empty gives the default, "en".

    Raises ServiceError for a language the public side is not written in.
    """
    if not code:
        return DEFAULT_SUBJECT_LANGUAGE
    try:
        return translation.get_supported_language_variant(code.strip().lower())
    except LookupError:
        codes = ", ".join(code for code, _name in settings.LANGUAGES)
        raise ServiceError(f"Unknown language {code!r}: use one of {codes}.") from None


def prepare_request(
    *,
    kind: str,
    regulation: str,
    email: str,
    name: str = "",
    distinct_ids: Sequence[str] = (),
    channel: str = Channel.WEB,
    received_at: datetime | None = None,
    disclosure_type: str = "",
    message: str = "",
    verified_by_staff: str = "",
    language: str = "",
    actor: Actor,
) -> DataSubjectRequest:
    """Check a request from any channel and build its row, unsaved and without a reference yet.

    Raises ServiceError with a message fit for the person who entered it. Deadlines count from ``received_at``
    (default: now); ``verified_by_staff`` (how identity was checked) lets staff-entered requests start at
    ``verified``. request_create_many saves what this builds.
    """
    if kind not in _KINDS:
        raise ServiceError(f"Unknown request kind {kind!r}: use one of {', '.join(RequestKind.values)}.")
    if regulation not in _REGULATIONS:
        raise ServiceError(f"Unknown regulation {regulation!r}: use one of {', '.join(Regulation.values)}.")
    if channel not in _CHANNELS:
        raise ServiceError(f"Unknown channel {channel!r}.")
    # Kept as typed (Mixpanel's profile query is case-sensitive: identity lookups ask for it as typed and
    # lower-cased); duplicates and search go by the hash of the lower-cased address.
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ServiceError("That is not a valid email address.") from None
    if len(name) > 200:
        raise ServiceError("The name is longer than 200 characters.")
    if disclosure_type and disclosure_type not in _DISCLOSURE_TYPES:
        raise ServiceError(f"Unknown disclosure type {disclosure_type!r}.")
    if regulation == Regulation.CCPA and kind == RequestKind.ACCESS:
        disclosure_type = disclosure_type or DisclosureType.DATA
    else:
        disclosure_type = ""
    language = subject_language(language)
    ids = clean_distinct_ids(distinct_ids)
    now = timezone.now()
    received_at = received_at or now
    if received_at > now:
        raise ServiceError("The received date is in the future.")
    due = states.due_date(regulation, _local_date(received_at))
    return DataSubjectRequest(
        kind=kind,
        regulation=regulation,
        disclosure_type=disclosure_type,
        requester_name=name.strip(),
        requester_email=email,
        email_hash=email_hash(email),
        message=message,
        distinct_ids=ids,
        status=states.VERIFIED if verified_by_staff else states.UNVERIFIED,
        channel=channel,
        language=language,
        received_at=received_at,
        verified_at=now if verified_by_staff else None,
        identity_verification=verified_by_staff,
        verified_by_id=actor.user_pk if verified_by_staff else None,
        original_due_at=due,
        due_at=due,
        link_nonce=secrets.token_hex(8),
    )


def request_create(
    *,
    kind: str,
    regulation: str,
    email: str,
    name: str = "",
    distinct_ids: Sequence[str] = (),
    projects: Sequence[MixpanelProject] | None = None,
    channel: str = Channel.WEB,
    received_at: datetime | None = None,
    disclosure_type: str = "",
    message: str = "",
    verified_by_staff: str = "",
    language: str = "",
    actor: Actor,
) -> DataSubjectRequest:
    """Take in a request from any channel (checked as prepare_request says). ``projects``: every active one."""
    dsr = prepare_request(
        kind=kind,
        regulation=regulation,
        email=email,
        name=name,
        distinct_ids=distinct_ids,
        channel=channel,
        received_at=received_at,
        disclosure_type=disclosure_type,
        message=message,
        verified_by_staff=verified_by_staff,
        language=language,
        actor=actor,
    )
    return request_create_many([dsr], actor=actor, projects=projects)[0]


def request_create_many(
    requests: Sequence[DataSubjectRequest],
    *,
    actor: Actor,
    projects: Sequence[MixpanelProject] | None = None,
    retry_in_savepoint: bool = True,
    extra_audit: Sequence[Entry] = (),
) -> list[DataSubjectRequest]:
    """Save requests built by prepare_request, with their project links and audit events, in one transaction.

    Several requests cost what one does in round trips (one INSERT per table, one append to the audit chain),
    which is how the portal commits the submissions that arrive together. Returns them saved, in order.

    A reference that is already taken is drawn again inside a savepoint. A caller that owns the whole
    transaction and retries it on IntegrityError may pass ``retry_in_savepoint=False`` to save the savepoint's
    two round trips. ``extra_audit`` entries are appended after the requests' own, in the same append (a
    channel's record of the message that brought them).
    """
    requests = list(requests)
    if not requests:
        return []
    with transaction.atomic(savepoint=False):
        project_list = (
            list(projects) if projects is not None else list(MixpanelProject.objects.filter(is_active=True).only("pk"))
        )
        if retry_in_savepoint:
            for _attempt in range(REFERENCE_ATTEMPTS):
                _draw_references(requests)
                try:
                    with transaction.atomic(), binary_parameters():
                        DataSubjectRequest.objects.bulk_create(requests)
                    break
                except IntegrityError:  # a reference collision: vanishingly rare, draw them all again
                    continue
            else:  # pragma: no cover
                raise ServiceError("Could not allocate a reference; try again.")
        else:
            _draw_references(requests)
            with binary_parameters():
                DataSubjectRequest.objects.bulk_create(requests)
        if project_list:  # new rows have no links yet: one INSERT instead of set()'s read-then-write
            through = DataSubjectRequest.projects.through
            with binary_parameters():
                through.objects.bulk_create(
                    [through(datasubjectrequest=dsr, mixpanelproject=p) for dsr in requests for p in project_list]
                )
        for hook in list(_intake_hooks):
            hook(requests)
        # Last, so the audit chain's lock is held for as short a time as possible before commit.
        audit_record_many(
            [
                Entry(
                    action="request.created",
                    actor=actor,
                    request_reference=dsr.reference,
                    payload={
                        "kind": dsr.kind,
                        "regulation": dsr.regulation,
                        "channel": dsr.channel,
                        "status": dsr.status,
                        "distinct_id_count": len(dsr.distinct_ids),
                        "project_count": len(project_list),
                        "due_at": dsr.due_at.isoformat(),
                        "received_at": dsr.received_at.isoformat(),
                        "email_hash": dsr.email_hash[:16],
                    },
                )
                for dsr in requests
            ]
            + list(extra_audit)
        )
    return requests


def _transition(
    *,
    request: DataSubjectRequest,
    action: str,
    actor: Actor,
    updates: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
    check: Callable[[DataSubjectRequest], None] | None = None,
) -> DataSubjectRequest:
    """Move ``request`` by ``action`` with a conditional UPDATE and one audit event, atomically."""
    with transaction.atomic():
        current = DataSubjectRequest.objects.filter(pk=request.pk).values_list("status", "status_before_hold").first()
        if current is None:
            raise ServiceError(f"Request {request.reference} no longer exists.")
        status, before_hold = current
        transition = states.check(action, status, reference=request.reference)
        target = before_hold if transition.target == states.PREVIOUS else transition.target
        request.status = status
        if check is not None:
            check(request)
        now = timezone.now()
        fields: dict[str, Any] = {"status": target, "status_changed_at": now, "updated_at": now}
        if target in states.FINAL_STATES:
            fields["closed_at"] = now
        if action == "hold":
            fields["status_before_hold"] = status
        elif action == "resume":
            fields["status_before_hold"] = ""
            fields["hold_reason"] = ""
        fields.update(updates or {})
        moved = DataSubjectRequest.objects.filter(pk=request.pk, status=status).update(**fields)
        if moved != 1:
            # Someone else moved it between our read and our write.
            latest = DataSubjectRequest.objects.filter(pk=request.pk).values_list("status", flat=True).first()
            raise states.TransitionNotAllowed(action=action, current=latest or "gone", reference=request.reference)
        audit_record(
            action=f"request.{action}",
            actor=actor,
            request_reference=request.reference,
            payload={"from": status, "to": target, **(payload or {})},
        )
        for name, value in fields.items():
            setattr(request, name, value)
        _after_transition([request.pk], action, target)
    return request


def _require_reason(reason: str, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError(f"A reason is required to {what}.")
    if len(reason) > 2000:
        raise ServiceError("The reason is longer than 2000 characters.")
    return reason


def request_confirm_email(*, request: DataSubjectRequest) -> DataSubjectRequest:
    """The data subject confirmed their email address: unverified → verified."""
    request = _transition(
        request=request,
        action="verify",
        actor=Actor.subject(),
        updates={"verified_at": timezone.now(), "identity_verification": "email address confirmed"},
        payload={"method": "email"},
    )
    if settings.DSR_AUTO_APPROVE_ACCESS and request.kind == RequestKind.ACCESS and request.distinct_ids:
        request = request_approve(request=request, actor=Actor.system("auto-approval"))
    return request


def request_record_identity(*, request: DataSubjectRequest, how: str, actor: Actor) -> DataSubjectRequest:
    """Staff checked the requester's identity by other means: unverified → verified."""
    how = _require_reason(how, "record how identity was checked")
    return _transition(
        request=request,
        action="verify",
        actor=actor,
        updates={
            "verified_at": timezone.now(),
            "identity_verification": how,
            "verified_by_id": actor.user_pk,
        },
        payload={"method": "staff"},
    )


_approval_blockers: list[Callable[[DataSubjectRequest], str]] = []


def register_approval_blocker(blocker: Callable[[DataSubjectRequest], str]) -> None:
    """``blocker(request)`` says why the request cannot be approved yet ("" when it can). Connected in
    AppConfig.ready() (identity lookups: a lookup of the email is still running)."""
    if blocker not in _approval_blockers:
        _approval_blockers.append(blocker)


def _registered_approval_blockers(request: DataSubjectRequest) -> list[str]:
    return [reason for reason in (blocker(request) for blocker in list(_approval_blockers)) if reason]


def approval_blockers(request: DataSubjectRequest) -> list[str]:
    """Why the request cannot be approved now (empty when it can)."""
    reasons = []
    if request.status != states.VERIFIED:
        reasons.append(f"it is {request.get_status_display().lower()}, not verified")
    if not request.distinct_ids:
        reasons.append("it has no Mixpanel distinct id yet")
    reasons.extend(_registered_approval_blockers(request))
    return reasons


def request_approve(*, request: DataSubjectRequest, actor: Actor) -> DataSubjectRequest:
    """verified → approved; the pipeline then plans its Mixpanel tasks.

    A deletion whose projects require two approvers moves only when two different staff members' approvals of
    exactly this request (requests/approval_rules.py) are on record; requests.approvals.request_approval_record records
    them and calls this. The audit event then names both approvers.
    """
    payload: dict[str, Any] = {}

    def check(current: DataSubjectRequest) -> None:
        registered = _registered_approval_blockers(current)
        if registered:
            raise ServiceError(f"Request {current.reference} cannot be approved yet: {'; '.join(registered)}.")
        if not current.distinct_ids:
            raise ServiceError(f"Request {current.reference} has no Mixpanel distinct id: add one before approving.")
        required = approval_rules.approvals_required(current)
        if required > 1:
            approvals = approval_rules.valid_approvals(current)
            approvers = list(dict.fromkeys(a.approver.get_username() for a in approvals))
            if len({a.approver_id for a in approvals}) < required:
                raise ServiceError(
                    f"Request {current.reference} needs approvals from {required} different staff members; "
                    f"{len(approvers)} on record."
                )
            payload.update(approvers=approvers, approvals_required=required)

    request.refresh_from_db(fields=["distinct_ids"])
    return _transition(
        request=request,
        action="approve",
        actor=actor,
        updates={"approved_at": timezone.now(), "approved_by_id": actor.user_pk},
        payload=payload,
        check=check,
    )


def request_reject(
    *, request: DataSubjectRequest, reason: str, actor: Actor, ground: str = RejectionGround.OTHER
) -> DataSubjectRequest:
    """Refuse a request on ``ground`` (RejectionGround) with free text for the subject (required for "other").

    The subject's email states the ground and their rights under the request's regulation.
    """
    if ground not in RejectionGround.values:
        raise ServiceError(f"Unknown rejection ground {ground!r}: use one of {', '.join(RejectionGround.values)}.")
    if ground == RejectionGround.OTHER:
        reason = _require_reason(reason, "reject a request")
    elif len(reason or "") > 2000:
        raise ServiceError("The reason is longer than 2000 characters.")
    reason = (reason or "").strip()
    with transaction.atomic():
        request = _transition(
            request=request,
            action="reject",
            actor=actor,
            updates={"rejection_reason": reason},
            payload={"reason_length": len(reason), "ground": ground},
        )
        RequestRejection.objects.update_or_create(request=request, defaults={"ground": ground})
    return request


def request_hold(*, request: DataSubjectRequest, reason: str, actor: Actor) -> DataSubjectRequest:
    reason = _require_reason(reason, "put a request on hold")
    return _transition(request=request, action="hold", actor=actor, updates={"hold_reason": reason})


def request_resume(*, request: DataSubjectRequest, actor: Actor, note: str = "") -> DataSubjectRequest:
    """on hold → the state before the hold; the hold reason is cleared.

    An optional ``note`` (why work resumes) is kept as an internal RequestNote, written in the same transaction:
    the request has no field for it (``hold_reason`` describes the hold that just ended), notes are where staff
    already read the request's internal history, and each hold/resume keeps its own. The trail records the
    note's id and length, never its text (it may mention the person).
    """
    note = (note or "").strip()
    if len(note) > 2000:
        raise ServiceError("The note is longer than 2000 characters.")
    with transaction.atomic():
        payload: dict[str, Any] = {}
        if note:
            # Written before the transition so that its audit event can point at it; a refused resume rolls
            # the note back with it.
            created = RequestNote.objects.create(request=request, author_id=actor.user_pk, text=note)
            payload = {"note_id": created.pk, "note_length": len(note)}
        return _transition(request=request, action="resume", actor=actor, payload=payload)


def request_cancel(*, request: DataSubjectRequest, actor: Actor, reason: str = "") -> DataSubjectRequest:
    """Withdraw a request (by the subject or staff). ServiceError when a withdrawal blocker says it is too late."""
    blocker = _registered_blocker(request)
    if blocker:
        raise ServiceError(blocker)
    return _transition(
        request=request,
        action="cancel",
        actor=actor,
        updates={"closing_note": reason.strip()} if reason.strip() else {},
    )


_withdrawal_blockers: list[Callable[[DataSubjectRequest], str]] = []


def register_withdrawal_blocker(blocker: Callable[[DataSubjectRequest], str]) -> None:
    """``blocker(request)`` says why the request can no longer be withdrawn ("" when it can). Connected in
    AppConfig.ready() (the pipeline's: Mixpanel has started the deletion)."""
    if blocker not in _withdrawal_blockers:
        _withdrawal_blockers.append(blocker)


def _registered_blocker(request: DataSubjectRequest) -> str:
    for blocker in list(_withdrawal_blockers):
        reason = blocker(request)
        if reason:
            return reason
    return ""


def withdrawal_blocker(request: DataSubjectRequest) -> str:
    """Why the request cannot be withdrawn now ("" when the subject or staff may): closed, or a blocker's reason.
    The one place this rule is checked; request_cancel applies the same blockers."""
    if request.status not in states.OPEN_STATES:
        return "This request is closed, so there is nothing left to withdraw."
    return _registered_blocker(request)


def request_expire(*, request: DataSubjectRequest) -> DataSubjectRequest:
    return _transition(request=request, action="expire", actor=Actor.system())


def request_start_processing(*, request: DataSubjectRequest, task_count: int) -> DataSubjectRequest:
    return _transition(
        request=request, action="start_processing", actor=Actor.system(), payload={"task_count": task_count}
    )


def request_complete(*, request: DataSubjectRequest, closing_note: str = "") -> DataSubjectRequest:
    return _transition(request=request, action="complete", actor=Actor.system(), updates={"closing_note": closing_note})


def request_fail(*, request: DataSubjectRequest, why: str) -> DataSubjectRequest:
    """processing → failed: waits for staff. ``why`` must not contain personal data."""
    return _transition(request=request, action="fail", actor=Actor.system(), payload={"why": why[:200]})


def request_retry(*, request: DataSubjectRequest, actor: Actor) -> DataSubjectRequest:
    return _transition(request=request, action="retry", actor=actor)


def request_extend(*, request: DataSubjectRequest, reason: str, actor: Actor) -> DataSubjectRequest:
    """Extend the deadline once, as the request's law allows; the subject is told (portal hook)."""
    reason = _require_reason(reason, "extend a deadline")
    with transaction.atomic():
        locked = DataSubjectRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status not in states.OPEN_STATES:
            raise ServiceError(f"Request {locked.reference} is {locked.status}: a closed request cannot be extended.")
        if locked.extended_at is not None:
            raise ServiceError(f"Request {locked.reference} was already extended once; the law allows one extension.")
        new_due = states.extended_due_date(locked.regulation, _local_date(locked.received_at))
        now = timezone.now()
        moved = DataSubjectRequest.objects.filter(pk=locked.pk, extended_at__isnull=True).update(
            due_at=new_due,
            extended_at=now,
            extension_reason=reason,
            extended_by_id=actor.user_pk,
            updated_at=now,
        )
        if moved != 1:  # pragma: no cover - the row lock makes this unreachable
            raise ServiceError(f"Request {locked.reference} was extended by someone else.")
        audit_record(
            action="request.extended",
            actor=actor,
            request_reference=locked.reference,
            payload={"from_due_at": locked.due_at.isoformat(), "to_due_at": new_due.isoformat()},
        )
        _after_transition([locked.pk], "extend", locked.status)
    request.refresh_from_db()
    return request


def request_set_distinct_ids(
    *, request: DataSubjectRequest, distinct_ids: Sequence[str], actor: Actor
) -> DataSubjectRequest:
    """Add or correct the subject's Mixpanel ids; only before approval."""
    ids = clean_distinct_ids(distinct_ids)
    with transaction.atomic():
        locked = DataSubjectRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status not in (states.UNVERIFIED, states.VERIFIED, states.ON_HOLD):
            raise ServiceError(
                f"Request {locked.reference} is {locked.status}: distinct ids can only change before approval."
            )
        before = len(locked.distinct_ids)
        locked.distinct_ids = ids
        locked.save(update_fields=["distinct_ids", "updated_at"])
        # An approval covers the ids it saw: new ids need new approvals.
        voided, _ = DeletionApproval.objects.filter(request=locked).delete()
        audit_record(
            action="request.distinct_ids_changed",
            actor=actor,
            request_reference=locked.reference,
            payload={"count_before": before, "count_after": len(ids), "approvals_voided": voided},
        )
    request.distinct_ids = ids
    return request


def request_set_projects(
    *, request: DataSubjectRequest, projects: Sequence[MixpanelProject], actor: Actor
) -> DataSubjectRequest:
    with transaction.atomic():
        locked = DataSubjectRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status not in (states.UNVERIFIED, states.VERIFIED, states.ON_HOLD):
            raise ServiceError(
                f"Request {locked.reference} is {locked.status}: projects can only change before approval."
            )
        locked.projects.set(projects)
        voided, _ = DeletionApproval.objects.filter(request=locked).delete()
        audit_record(
            action="request.projects_changed",
            actor=actor,
            request_reference=locked.reference,
            payload={"projects": sorted(p.name for p in projects), "approvals_voided": voided},
        )
    return request


def request_assign(*, request: DataSubjectRequest, assignee: Any, actor: Actor) -> DataSubjectRequest:
    with transaction.atomic():
        DataSubjectRequest.objects.filter(pk=request.pk).update(assignee=assignee, updated_at=timezone.now())
        audit_record(
            action="request.assigned",
            actor=actor,
            request_reference=request.reference,
            payload={"assignee": assignee.get_username() if assignee else None},
        )
    request.assignee = assignee
    return request


def request_add_note(*, request: DataSubjectRequest, note: str, actor: Actor) -> RequestNote:
    """An internal note. The trail records that it was written, not its text (it may mention the person)."""
    note = _require_reason(note, "add a note")
    with transaction.atomic():
        created = RequestNote.objects.create(request=request, author_id=actor.user_pk, text=note)
        audit_record(
            action="request.note_added",
            actor=actor,
            request_reference=request.reference,
            payload={"note_id": created.pk, "length": len(note)},
        )
    return created
