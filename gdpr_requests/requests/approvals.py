"""Recording staff approvals: one call per approver (the last one needed moves the request to approved), and
approving many requests at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, Entry, audit_record, audit_record_many
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


@dataclass(frozen=True)
class BulkApproval:
    """What request_approve_many did: references approved, approvals recorded (awaiting a second), refusals."""

    approved: list[str]
    awaiting_second: list[str]
    refused: list[str]


def request_approve_many(*, request_pks: Sequence[int], actor: Actor) -> BulkApproval:
    """Approve many verified requests at once: one conditional UPDATE, one batched audit append.

    The statement count does not grow with the number of requests (the rows are locked and read in one query,
    their approval rules in another). Requests that need a second approver go through request_approval_record
    one by one (they are few); the rest are refused with a message naming the reason. The pipeline hooks run
    per request after the commit (one broker message each, no SQL).
    """
    pks = list(dict.fromkeys(request_pks))
    if not pks:
        return BulkApproval(approved=[], awaiting_second=[], refused=[])
    approved: list[str] = []
    awaiting: list[str] = []
    refused: list[str] = []
    with transaction.atomic():
        rows = list(
            DataSubjectRequest.objects.select_for_update()
            .filter(pk__in=pks)
            .order_by("due_at", "id")
            .values_list("pk", "reference", "status", "distinct_ids")
        )
        required = rules.required_by_request([row[0] for row in rows])
        movable: list[tuple[int, str]] = []
        two_person: list[int] = []
        for pk, reference, status, distinct_ids in rows:
            if status != states.VERIFIED:
                refused.append(f"{reference}: cannot approve, it is {status} (not verified).")
            elif not distinct_ids:
                # The registered approval blockers (identity lookups) only ever stop requests without ids, so
                # refusing those here applies them without a query per request.
                refused.append(f"{reference}: cannot approve, it has no Mixpanel distinct id yet.")
            elif required[pk] > 1:
                two_person.append(pk)
            else:
                movable.append((pk, reference))
        if movable:
            now = timezone.now()
            moved = DataSubjectRequest.objects.filter(pk__in=[pk for pk, _ in movable], status=states.VERIFIED).update(
                status=states.APPROVED,
                status_changed_at=now,
                updated_at=now,
                approved_at=now,
                approved_by_id=actor.user_pk,
            )
            if moved != len(movable):  # pragma: no cover - the rows are locked
                raise ServiceError("Some requests changed while they were being approved; try again.")
            audit_record_many(
                [
                    Entry(
                        action="request.approve",
                        actor=actor,
                        request_reference=reference,
                        payload={"from": states.VERIFIED, "to": states.APPROVED, "bulk": True},
                    )
                    for _, reference in movable
                ]
            )
            approved.extend(reference for _, reference in movable)
            services.after_bulk_transition([pk for pk, _ in movable], "approve", states.APPROVED)
    for dsr in DataSubjectRequest.objects.filter(pk__in=two_person).order_by("due_at", "id"):
        try:
            outcome = request_approval_record(request=dsr, actor=actor)
        except (ServiceError, states.TransitionNotAllowed) as exc:
            refused.append(str(exc))
        else:
            (approved if outcome.approved else awaiting).append(dsr.reference)
    return BulkApproval(approved=approved, awaiting_second=awaiting, refused=refused)
