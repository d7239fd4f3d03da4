"""Recording staff approvals: one call per approver; the last one needed moves the request to approved."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import DataSubjectRequest, DeletionApproval
from gdpr_requests.requests import approval_rules as rules
from gdpr_requests.requests import services, states
from gdpr_requests.requests.services import ServiceError


@dataclass(frozen=True)
class ApprovalOutcome:
    request: DataSubjectRequest
    approvals: int
    required: int

    @property
    def approved(self) -> bool:
        return self.request.status == states.APPROVED

    @property
    def remaining(self) -> int:
        return max(0, self.required - self.approvals)


def request_approval_record(*, request: DataSubjectRequest, actor: Actor) -> ApprovalOutcome:
    """Record ``actor``'s approval of ``request``; approve it when that makes enough.

    With one approval required this is request_approve. With two, the first approver's approval is recorded
    (DeletionApproval + audit "request.approval_recorded"; the request stays verified) and the second, different
    approver's moves it to approved. The same person twice is refused, superusers included, here and by the
    table's unique constraint. Approvals that lapsed (DSR_APPROVAL_EXPIRY_HOURS) are dropped first.
    """
    with transaction.atomic():
        locked = DataSubjectRequest.objects.select_for_update().get(pk=request.pk)
        required = rules.approvals_required(locked)
        if required == 1:
            approved = services.request_approve(request=locked, actor=actor)
            return ApprovalOutcome(request=approved, approvals=1, required=1)
        if actor.user_pk is None:
            raise ServiceError(f"Request {locked.reference} needs approvals by named staff members.")
        blockers = services.approval_blockers(locked)
        if blockers:
            raise ServiceError(f"Cannot approve {locked.reference}: {'; '.join(blockers)}.")
        now = timezone.now()
        lapsed, _ = DeletionApproval.objects.filter(request=locked, approved_at__lt=rules.expiry_cutoff(now)).delete()
        binding = rules.request_binding(locked)
        current = rules.valid_approvals(locked, binding=binding)
        if any(a.approver_id == actor.user_pk for a in current):
            raise ServiceError(
                f"You have already approved {locked.reference}: a different staff member must give the second approval."
            )
        try:
            with transaction.atomic():
                DeletionApproval.objects.create(
                    request=locked, approver_id=actor.user_pk, binding_hash=binding, approved_at=now
                )
        except IntegrityError:
            raise ServiceError(f"You have already approved {locked.reference}.") from None
        count = len({a.approver_id for a in current}) + 1
        audit_record(
            action="request.approval_recorded",
            actor=actor,
            request_reference=locked.reference,
            payload={"approvals": count, "required": required, "binding": binding[:16], "lapsed": lapsed},
        )
        if count >= required:
            locked = services.request_approve(request=locked, actor=actor)
        request.status = locked.status
        return ApprovalOutcome(request=locked, approvals=min(count, required), required=required)
