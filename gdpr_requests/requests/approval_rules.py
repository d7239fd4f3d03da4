"""What counts as an approval of a request, and how many it needs.

A deletion in a project whose ``deletion_approvals_required`` is 2 is carried out only after two different staff
members approved it. An approval is bound to what was approved: the request's kind, its projects and a SHA-256 of
its sorted, distinct ids. Another binding (ids or projects changed) no longer counts, and an approval older than
``DSR_APPROVAL_EXPIRY_HOURS`` lapses. This module only reads; ``requests.services.request_approve`` applies the
rule and ``requests.approvals.request_approval_record`` records approvals.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from gdpr_requests.models import DataSubjectRequest, DeletionApproval, RequestKind


def binding_hash(*, kind: str, project_pks: Iterable[int], distinct_ids: Iterable[str]) -> str:
    """SHA-256 over the kind, the sorted project keys and a SHA-256 of the sorted distinct-id set."""
    ids_digest = hashlib.sha256("\n".join(sorted(set(distinct_ids))).encode()).hexdigest()
    body = json.dumps({"kind": kind, "projects": sorted(set(project_pks)), "ids": ids_digest}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def request_binding(request: DataSubjectRequest) -> str:
    project_pks = request.projects.values_list("pk", flat=True)
    return binding_hash(kind=request.kind, project_pks=project_pks, distinct_ids=request.distinct_ids)


def approvals_required(request: DataSubjectRequest) -> int:
    """1 for access requests; for a deletion, the most any of its projects asks for."""
    if request.kind != RequestKind.DELETION:
        return 1
    most = request.projects.aggregate(most=Max("deletion_approvals_required"))["most"]
    return max(1, most or 1)


def required_by_request(request_pks: Sequence[int]) -> dict[int, int]:
    """approvals_required for many requests in one query (access requests and project-less ones: 1)."""
    rows = (
        DataSubjectRequest.objects.filter(pk__in=request_pks, kind=RequestKind.DELETION)
        .values("pk")
        .annotate(most=Max("projects__deletion_approvals_required"))
    )
    found = {row["pk"]: max(1, row["most"] or 1) for row in rows}
    return {pk: found.get(pk, 1) for pk in request_pks}


def expiry_cutoff(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(hours=settings.DSR_APPROVAL_EXPIRY_HOURS)


def valid_approvals(request: DataSubjectRequest, *, binding: str | None = None) -> list[DeletionApproval]:
    """The approvals that still count: this binding, not expired; oldest first, approver loaded."""
    binding = binding or request_binding(request)
    return list(
        DeletionApproval.objects.filter(request=request, binding_hash=binding, approved_at__gte=expiry_cutoff())
        .select_related("approver")
        .order_by("approved_at", "id")
    )


@dataclass(frozen=True)
class ApprovalState:
    """Where a request stands: how many approvals it needs, who has approved (still counting)."""

    required: int
    approvers: tuple[str, ...]
    expires_at: datetime | None

    @property
    def count(self) -> int:
        return len(self.approvers)

    @property
    def remaining(self) -> int:
        return max(0, self.required - self.count)


def approval_state(request: DataSubjectRequest) -> ApprovalState:
    required = approvals_required(request)
    if required == 1:
        return ApprovalState(required=1, approvers=(), expires_at=None)
    approvals = valid_approvals(request)
    names = tuple(dict.fromkeys(a.approver.get_username() for a in approvals))
    expires = approvals[0].approved_at + timedelta(hours=settings.DSR_APPROVAL_EXPIRY_HOURS) if approvals else None
    return ApprovalState(required=required, approvers=names, expires_at=expires)
