"""What the approve confirmation page shows for each request: what will happen, and what to look at first.

Read in a fixed number of queries whatever the number of requests (the bulk action may confirm a thousand).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from django.db.models import Count

from gdpr_requests.identity.selectors import pending_lookups_by_request
from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.requests import approval_rules, states

EMAIL_ONLY_VERIFICATION = "email address confirmed"


@dataclass(frozen=True)
class ApprovalRow:
    pk: int
    reference: str
    kind: str
    regulation: str
    projects: list[str]
    distinct_id_count: int
    due_at: date
    required: int
    warnings: list[str] = field(default_factory=list)
    blocked: bool = False


def approval_rows(request_pks: Sequence[int]) -> list[ApprovalRow]:
    """One row per request, in due order, with its warnings (blocking ones first)."""
    requests = list(
        DataSubjectRequest.objects.filter(pk__in=list(request_pks))
        .prefetch_related("projects")
        .order_by("due_at", "id")
    )
    required = approval_rules.required_by_request([dsr.pk for dsr in requests])
    open_counts = {
        (row["email_hash"], row["kind"]): row["n"]
        for row in DataSubjectRequest.objects.filter(
            email_hash__in={dsr.email_hash for dsr in requests if dsr.email_hash}, status__in=states.OPEN_STATES
        )
        .values("email_hash", "kind")
        .annotate(n=Count("id"))
    }
    lookups = pending_lookups_by_request([dsr.pk for dsr in requests])
    rows = []
    for dsr in requests:
        warnings: list[str] = []
        blocked = False
        if dsr.status != states.VERIFIED:
            warnings.append(f"It is {dsr.get_status_display().lower()}, not verified: it cannot be approved.")
            blocked = True
        if not dsr.distinct_ids:
            warnings.append("No Mixpanel distinct id yet: it cannot be approved.")
            blocked = True
        if dsr.pk in lookups:
            warnings.append(
                f"Lookup pending: its email is still being looked up in {', '.join(lookups[dsr.pk])}; "
                + ("approving waits for it." if not dsr.distinct_ids else "more distinct ids may be found.")
            )
        if dsr.identity_verification == EMAIL_ONLY_VERIFICATION:
            warnings.append("Identity checked only by email confirmation.")
        if dsr.email_hash and open_counts.get((dsr.email_hash, dsr.kind), 0) > 1:  # no email: no one to match
            warnings.append(
                f"Possible duplicate: another open {dsr.get_kind_display().lower()} request by the same person."
            )
        if required[dsr.pk] > 1:
            warnings.append(
                f"Needs {required[dsr.pk]} different approvers: this records yours; the deletion waits for the other."
            )
        rows.append(
            ApprovalRow(
                pk=dsr.pk,
                reference=dsr.reference,
                kind=dsr.get_kind_display(),
                regulation=dsr.get_regulation_display(),
                projects=[project.name for project in dsr.projects.all()],
                distinct_id_count=len(dsr.distinct_ids),
                due_at=dsr.due_at,
                required=required[dsr.pk],
                warnings=warnings,
                blocked=blocked,
            )
        )
    return rows
