"""Writes that only staff make and that no other services module covers (used by the staff admin).

Like services.py: keyword-only, validated, audited in the same transaction, emails queued after commit.
"""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.notifications.outbox import notify_after_commit
from gdpr_requests.requests import states
from gdpr_requests.requests.services import ServiceError


def request_resend_verification(*, dsr: DataSubjectRequest, actor: Actor) -> DataSubjectRequest:
    """Email the requester a fresh confirmation link (links sent before stop working). Unverified only."""
    with transaction.atomic():
        locked = DataSubjectRequest.objects.select_for_update().get(pk=dsr.pk)
        if locked.status != states.UNVERIFIED:
            raise ServiceError(
                f"Request {locked.reference} is {locked.get_status_display().lower()}: "
                "only an unverified request waits for its confirmation email."
            )
        if locked.purged_at is not None:
            raise ServiceError(f"Request {locked.reference} no longer holds an email address.")
        nonce = secrets.token_hex(8)
        DataSubjectRequest.objects.filter(pk=locked.pk).update(link_nonce=nonce, updated_at=timezone.now())
        event = audit_record(
            action="request.verification_resent",
            actor=actor,
            request_reference=locked.reference,
            payload={"status": locked.status},
        )
        # The portal's "resend" email carries a new confirmation link while the request is unverified.
        notify_after_commit(request_id=locked.pk, event=f"resend:{event.pk}")
    dsr.link_nonce = nonce
    return dsr
