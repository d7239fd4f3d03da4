"""Cohort intakes: configuring them, checking a sync's credentials, and taking a message in (docs/cohorts.md).

A message is stored whole or not at all: one transaction holds the intake's row lock (so deliveries to one intake
are taken one after the other and a member cannot be taken twice), the sync row, the requests (set-based, through
request_create_many, the web form's group-commit path) and one append to the audit trail. The caller answers
Mixpanel only after that commit. No member data goes into the sync row, the audit payloads or the logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, Entry, audit_record, audit_record_many
from gdpr_requests.cache import count_hit
from gdpr_requests.cohorts.messages import CohortMessage, Member, MessageRefused
from gdpr_requests.models import (
    Channel,
    CohortAction,
    CohortIdentity,
    CohortIntake,
    CohortMember,
    CohortSync,
    DataSubjectRequest,
    MixpanelProject,
    Regulation,
    RequestKind,
)
from gdpr_requests.requests import states
from gdpr_requests.requests.services import (
    ServiceError,
    prepare_request,
    request_approve,
    request_create_many,
)
from gdpr_requests.requests.states import TransitionNotAllowed
from gdpr_requests.server_binding import binary_parameters

logger = logging.getLogger("gdpr_requests.cohorts")

WEBHOOK_PATH = "/integrations/mixpanel/cohorts/{public_id}/"
# The auto-approval task's pinned name (cohorts/tasks.py): services enqueue by name, never import a tasks module.
APPROVE_SYNC = "gdpr_requests.tasks.cohort_approve_sync"
# prepare_request checks an address; a product-login member may have none, and its row then keeps none.
_NO_EMAIL_PLACEHOLDER = "no-email@cohort.invalid"
# Credentials over this length are refused before any hashing (a password is 43 characters).
MAX_CREDENTIAL_LENGTH = 512


def repeat_days() -> int:
    return int(getattr(settings, "COHORT_REPEAT_DAYS", 30))


def password_grace() -> timedelta:
    return timedelta(hours=float(getattr(settings, "COHORT_PASSWORD_GRACE_HOURS", 72)))


def webhook_url(intake: CohortIntake) -> str:
    return settings.SITE_URL.rstrip("/") + WEBHOOK_PATH.format(public_id=intake.public_id)


def actor_for_intake(intake: CohortIntake) -> Actor:
    return Actor.system(f"cohort:{intake.name}")


def verification_text(intake: CohortIntake) -> str:
    return f"signed-in user of the product, via cohort {intake.name}"


def auto_approval_blocked(intake: CohortIntake) -> str:
    """Why the intake's auto-approval cannot approve its requests, or "" when it can (or is off).

    A deletion in a project that requires two approvers is approved only by two different staff members
    (requests/approval_rules.py), never by the intake's system actor: its requests wait, verified, for them.
    The project's rule can change after the intake is made, so this is asked when the intake is shown.
    """
    if not intake.auto_approve or intake.kind != RequestKind.DELETION:
        return ""
    required = intake.project.deletion_approvals_required
    if required <= 1:
        return ""
    return (
        f"Auto-approval does not apply: project {intake.project.name} requires {required} different staff "
        "members to approve each deletion, so this intake's requests wait, verified, for their approvals."
    )


def auto_approval_blocked_intakes(project: MixpanelProject) -> list[CohortIntake]:
    """The project's active intakes whose auto-approval its deletion rule overrides."""
    intakes = CohortIntake.objects.filter(project=project, is_active=True, auto_approve=True).select_related("project")
    return [intake for intake in intakes.order_by("name") if auto_approval_blocked(intake)]


def _new_password() -> str:
    # The prefix keeps a password from starting with "-" (a command line would read it as an option) and lets
    # secret scanners recognise one.
    return "mpcohort_" + secrets.token_urlsafe(32)


# --- Configuration ------------------------------------------------------------------------------------------


def cohort_intake_create(
    *,
    name: str,
    project: MixpanelProject,
    kind: str,
    regulation: str,
    identity: str = CohortIdentity.PRODUCT_LOGIN,
    auto_approve: bool = False,
    actor: Actor,
) -> tuple[CohortIntake, str]:
    """Create an intake; returns it with its password, which is shown this once and kept only hashed."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("An intake needs a name of 1 to 100 characters.")
    if kind not in RequestKind.values:
        raise ServiceError(f"Unknown request kind {kind!r}: use one of {', '.join(RequestKind.values)}.")
    if regulation not in Regulation.values:
        raise ServiceError(f"Unknown regulation {regulation!r}: use one of {', '.join(Regulation.values)}.")
    if identity not in CohortIdentity.values:
        raise ServiceError(f"Unknown identity mode {identity!r}: use one of {', '.join(CohortIdentity.values)}.")
    if not project.is_active:
        raise ServiceError(f"Project {project.name} is not active.")
    password = _new_password()
    with transaction.atomic():
        if CohortIntake.objects.filter(name__iexact=name).exists():
            raise ServiceError(f"An intake named {name!r} exists already.")
        intake = CohortIntake.objects.create(
            name=name,
            project=project,
            kind=kind,
            regulation=regulation,
            identity=identity,
            auto_approve=auto_approve,
            public_id=secrets.token_urlsafe(24),
            username=f"mixpanel-{secrets.token_hex(4)}",
            password_hash=make_password(password),
        )
        audit_record(
            action="cohort_intake.created",
            actor=actor,
            payload={
                "intake_id": intake.pk,
                "intake": intake.name,
                "project": project.name,
                "kind": kind,
                "regulation": regulation,
                "identity": identity,
                "auto_approve": auto_approve,
            },
        )
    return intake, password


def cohort_intake_rotate_password(*, intake: CohortIntake, actor: Actor) -> str:
    """A new password; the current one keeps working for COHORT_PASSWORD_GRACE_HOURS. Returns the new one."""
    password = _new_password()
    now = timezone.now()
    with transaction.atomic():
        locked = CohortIntake.objects.select_for_update().get(pk=intake.pk)
        locked.previous_password_hash = locked.password_hash
        locked.previous_valid_until = now + password_grace()
        locked.password_hash = make_password(password)
        locked.password_changed_at = now
        locked.save(
            update_fields=[
                "previous_password_hash",
                "previous_valid_until",
                "password_hash",
                "password_changed_at",
                "updated_at",
            ]
        )
        audit_record(
            action="cohort_intake.password_rotated",
            actor=actor,
            payload={"intake_id": locked.pk, "old_valid_until": locked.previous_valid_until.isoformat()},
        )
    intake.refresh_from_db()
    return password


def cohort_intake_disable(*, intake: CohortIntake, actor: Actor) -> CohortIntake:
    """Stop taking messages: Mixpanel then gets 404, which pauses the sync and emails whoever set it up."""
    with transaction.atomic():
        moved = CohortIntake.objects.filter(pk=intake.pk, is_active=True).update(
            is_active=False, updated_at=timezone.now()
        )
        if not moved:
            raise ServiceError(f"Intake {intake.name} is disabled already.")
        audit_record(action="cohort_intake.disabled", actor=actor, payload={"intake_id": intake.pk})
    intake.is_active = False
    return intake


# --- Authentication -----------------------------------------------------------------------------------------

# Fingerprints of (stored hash, password) pairs that checked out, in this process and in the shared cache for
# VERIFIED_TTL: a sync posts many pages to any of the web processes, and the password hasher is deliberately
# slow (a second or more on a busy machine). The fingerprint is keyed with SECRET_KEY and a rotation changes the
# stored hash, so an entry can only ever vouch for the pair that was checked, and reveals nothing of it.
_verified: dict[str, None] = {}
_VERIFIED_MAX = 256
VERIFIED_TTL = 3600


def _fingerprint(encoded: str, password: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), f"{encoded}\0{password}".encode(), hashlib.sha256).hexdigest()


def _password_matches(password: str, encoded: str, *, slow_check: bool = True) -> bool:
    if not encoded:
        return False
    fingerprint = _fingerprint(encoded, password)
    cache_key = f"cohort-auth:{fingerprint}"
    if fingerprint not in _verified:
        if not _cache_get(cache_key):
            if not slow_check or not check_password(password, encoded):
                return False
            _cache_set(cache_key)
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[fingerprint] = None
    return True


def _cache_get(key: str) -> bool:
    try:
        return bool(cache.get(key))
    except Exception:  # the cache is down: check the password the slow way
        return False


def _cache_set(key: str) -> None:
    with contextlib.suppress(Exception):
        cache.set(key, True, VERIFIED_TTL)


def cohort_credentials_valid(*, intake: CohortIntake, username: str, password: str, slow_check: bool = True) -> bool:
    """Whether the Basic credentials are the intake's (the current password, or the previous one in its grace).

    Both parts are always checked, each in constant time, so neither the answer nor its timing says which part
    was wrong. ``slow_check=False`` (while failures are throttled) accepts only a password already checked, so
    guesses cost no hashing and the sync Mixpanel already runs goes on.
    """
    if len(username) > MAX_CREDENTIAL_LENGTH or len(password) > MAX_CREDENTIAL_LENGTH:
        return False
    user_ok = hmac.compare_digest(username.encode(), intake.username.encode())
    pass_ok = _password_matches(password, intake.password_hash, slow_check=slow_check)
    if not pass_ok and intake.previous_valid_until and intake.previous_valid_until > timezone.now():
        pass_ok = _password_matches(password, intake.previous_password_hash, slow_check=slow_check)
    return user_ok and pass_ok


def auth_failures_per_minute() -> int:
    return int(getattr(settings, "COHORT_AUTH_FAILURES_PER_MINUTE", 20))


def _failure_window_key(intake: CohortIntake) -> str:
    return f"cohort-auth-failures:{intake.pk}:{int(timezone.now().timestamp() // 60)}"


def cohort_auth_throttled(*, intake: CohortIntake) -> bool:
    """Whether the intake had COHORT_AUTH_FAILURES_PER_MINUTE failed authentications in the current minute."""
    try:
        return int(cache.get(_failure_window_key(intake)) or 0) >= auth_failures_per_minute()
    except Exception:  # the cache is down: no throttling rather than no intake
        return False


def cohort_intake_record_auth_failure(*, intake: CohortIntake) -> None:
    """Count a failed authentication (what was sent is not kept)."""
    now = timezone.now()
    CohortIntake.objects.filter(pk=intake.pk).update(
        auth_failure_count=F("auth_failure_count") + 1, last_auth_failure_at=now, updated_at=now
    )
    with contextlib.suppress(Exception):
        count_hit(_failure_window_key(intake), timeout=120)


# --- Receiving ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOutcome:
    sync: CohortSync
    repeated: bool
    created: int
    duplicates: int
    refused: int


def member_key(distinct_id: str) -> str:
    """A keyed hash of a distinct id: finds an intake's earlier request for a member without storing the id."""
    key = settings.EMAIL_HASH_KEY.encode()
    return hmac.new(key, b"cohort-member\0" + distinct_id.encode(), hashlib.sha256).hexdigest()


def _taken_keys(intake: CohortIntake, keys: Sequence[str]) -> set[str]:
    """The keys with an open request from this intake, or one completed within COHORT_REPEAT_DAYS."""
    if not keys:
        return set()
    since = timezone.now() - timedelta(days=repeat_days())
    return set(
        CohortMember.objects.filter(intake=intake, member_key__in=keys)
        .filter(
            Q(request__status__in=states.OPEN_STATES)
            | Q(request__status=states.COMPLETED, request__closed_at__gte=since)
        )
        .values_list("member_key", flat=True)
    )


def _sync_entry(intake: CohortIntake, sync: CohortSync, action: str) -> Entry:
    return Entry(
        action=action,
        actor=actor_for_intake(intake),
        payload={
            "intake_id": intake.pk,
            "sync_id": sync.pk,
            "sync_action": sync.action,
            "page_count": sync.page_count,
            "total_pages": sync.total_pages,
            "members_received": sync.members_received,
            "requests_created": sync.requests_created,
            "duplicates_skipped": sync.duplicates_skipped,
            "refused": sync.refused,
        },
    )


def cohort_sync_receive(*, intake: CohortIntake, message: CohortMessage) -> SyncOutcome:
    """Take one message in: log it, create a request per new member, audit it; all in one transaction.

    A page already taken (same session, action and page number) is answered again without creating anything.
    Raises MessageRefused when the intake is disabled or the message belongs to another Mixpanel project.
    """
    if message.project_id != str(intake.project.mixpanel_project_id).strip():
        raise MessageRefused("This webhook belongs to another Mixpanel project.", status=403, action=message.action)
    with transaction.atomic():
        locked = CohortIntake.objects.select_for_update().select_related("project").filter(pk=intake.pk).first()
        if locked is None or not locked.is_active:
            raise MessageRefused("This webhook is disabled.", status=404, action=message.action)
        intake = locked
        earlier = CohortSync.objects.filter(
            intake=intake, session_id=message.session_id, action=message.action, page_count=message.page_count
        ).first()
        if earlier is not None:
            CohortSync.objects.filter(pk=earlier.pk).update(redeliveries=F("redeliveries") + 1)
            earlier.redeliveries += 1
            audit_record_many([_sync_entry(intake, earlier, "cohort.sync_repeated")])
            return SyncOutcome(sync=earlier, repeated=True, created=0, duplicates=len(message.members), refused=0)

        sync = CohortSync(
            intake=intake,
            action=message.action,
            mixpanel_cohort_id=message.cohort_id,
            session_id=message.session_id,
            page_count=message.page_count,
            total_pages=message.total_pages,
            members_received=len(message.members),
        )
        to_create: list[tuple[str, DataSubjectRequest]] = []
        if message.action != CohortAction.REMOVE_MEMBERS:
            # Removals are only logged: every deletion carried out is followed by one (docs/cohorts.md, 2.6).
            to_create, sync.duplicates_skipped, sync.refused = _plan_members(intake, message)
        sync.requests_created = len(to_create)
        sync.save()
        actor = actor_for_intake(intake)
        entry = _sync_entry(intake, sync, "cohort.sync_received")
        if to_create:
            requests = request_create_many(
                [dsr for _key, dsr in to_create], actor=actor, projects=[intake.project], extra_audit=[entry]
            )
            with binary_parameters():
                CohortMember.objects.bulk_create(
                    [
                        CohortMember(intake=intake, sync=sync, member_key=key, request=dsr)
                        for (key, _dsr), dsr in zip(to_create, requests, strict=True)
                    ]
                )
        else:
            audit_record_many([entry])
        CohortIntake.objects.filter(pk=intake.pk).update(last_sync_at=sync.received_at)
        if to_create and intake.auto_approve and intake.identity == CohortIdentity.PRODUCT_LOGIN:
            sync_id = sync.pk
            transaction.on_commit(lambda: _enqueue_approval(sync_id))
    return SyncOutcome(
        sync=sync, repeated=False, created=len(to_create), duplicates=sync.duplicates_skipped, refused=sync.refused
    )


def _plan_members(
    intake: CohortIntake, message: CohortMessage
) -> tuple[list[tuple[str, DataSubjectRequest]], int, int]:
    """(key, unsaved request) for each member to take, and the counts of duplicates and refusals."""
    by_key: dict[str, Member] = {}
    duplicates = refused = 0
    for member in message.members:
        key = member_key(member.distinct_id)
        if key in by_key:  # the same member twice in one page
            duplicates += 1
            continue
        by_key[key] = member
    taken = _taken_keys(intake, list(by_key))
    duplicates += len(taken)
    by_email = intake.identity == CohortIdentity.EMAIL
    actor = actor_for_intake(intake)
    planned: list[tuple[str, DataSubjectRequest]] = []
    for key, member in by_key.items():
        if key in taken:
            continue
        if by_email and not member.email:
            refused += 1  # nobody to confirm with: counted on the sync row for staff
            continue
        try:
            dsr = prepare_request(
                kind=intake.kind,
                regulation=intake.regulation,
                email=member.email or _NO_EMAIL_PLACEHOLDER,
                name=member.name,
                distinct_ids=[member.distinct_id],
                channel=Channel.COHORT,
                verified_by_staff="" if by_email else verification_text(intake),
                actor=actor,
            )
        except ServiceError:
            refused += 1
            continue
        if not member.email:
            dsr.requester_email = ""
            dsr.email_hash = ""
        planned.append((key, dsr))
    return planned, duplicates, refused


def _enqueue_approval(sync_id: int) -> None:
    try:
        current_app.signature(APPROVE_SYNC, args=(sync_id,)).apply_async()
    except Exception as exc:  # the broker is down: the requests wait, verified, for staff (or approve-pending)
        logger.warning("could not queue the approval of cohort sync %s (%s)", sync_id, type(exc).__name__)


def cohort_sync_approve(*, sync: CohortSync) -> int:
    """Approve the verified requests a sync created, as the system actor ``cohort:NAME``; returns how many.

    Idempotent: a request someone else moved (approved, rejected, put on hold) is left as it is.
    """
    intake = sync.intake
    if not intake.auto_approve or not intake.is_active:
        return 0
    return _approve(
        intake,
        DataSubjectRequest.objects.filter(cohort_member__sync=sync, status=states.VERIFIED),
    )


def cohort_intake_approve_pending(*, intake: CohortIntake) -> int:
    """Approve every verified request of an auto-approving intake (after a lost approval message)."""
    if not intake.auto_approve:
        raise ServiceError(f"Intake {intake.name} does not approve automatically.")
    return _approve(intake, DataSubjectRequest.objects.filter(cohort_member__intake=intake, status=states.VERIFIED))


def _approve(intake: CohortIntake, queryset: Any) -> int:
    actor = actor_for_intake(intake)
    approved = 0
    for dsr in queryset.order_by("pk").iterator(chunk_size=500):
        try:
            request_approve(request=dsr, actor=actor)
        except (TransitionNotAllowed, ServiceError):
            continue
        approved += 1
    return approved


def approve_after_verification(request_id: int, action: str, new_status: str) -> None:
    """Transition hook: a request from an auto-approving email intake is approved once its subject confirms."""
    if action != "verify":
        return
    dsr = (
        DataSubjectRequest.objects.filter(
            pk=request_id,
            status=states.VERIFIED,
            cohort_member__intake__auto_approve=True,
            cohort_member__intake__is_active=True,
        )
        .select_related("cohort_member__intake")
        .first()
    )
    if dsr is None:
        return
    with contextlib.suppress(TransitionNotAllowed, ServiceError):  # someone else moved it first
        request_approve(request=dsr, actor=actor_for_intake(dsr.cohort_member.intake))
