"""Read-only views of identity lookups for other features (the evidence pack: how a request's ids were found).

``evidence_for`` holds no personal data: no email, no distinct id, no profile name; only projects, times,
counts and who decided, so a report may print it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gdpr_requests.identity.services import OPEN_LOOKUP, lookup_summary
from gdpr_requests.models import CandidateState, DataSubjectRequest, IdentityCandidate, IdentityLookup


def evidence_for(request: DataSubjectRequest) -> list[dict[str, Any]]:
    """Per project: when the email was looked up, what came of it, and the candidates accepted and rejected by
    whom. A request without lookups gives [] (its ids, if any, were entered by the subject or by staff)."""
    rows = []
    lookups = IdentityLookup.objects.filter(request=request).select_related("project").order_by("project__name")
    for lookup in lookups:
        decided: dict[tuple[str, str], int] = {}
        for state, user in IdentityCandidate.objects.filter(request=request, project=lookup.project).values_list(
            "state", "decided_by__username"
        ):
            if state != CandidateState.PENDING:
                key = (state, user or "system (auto-accept)")
                decided[key] = decided.get(key, 0) + 1
        rows.append(
            {
                "project": lookup.project.name,
                "looked_up_at": lookup.finished_at,
                "status": lookup.status,
                "outcome": lookup_summary(lookup),
                "candidates": lookup.candidate_count,
                "decisions": [
                    {"state": state, "by": who, "count": count} for (state, who), count in sorted(decided.items())
                ],
            }
        )
    return rows


def pending_lookups_by_request(request_pks: Sequence[int]) -> dict[int, list[str]]:
    """The projects in which each request's email is still being looked up (waiting or running; paused
    projects included, named as such), in one query whatever the number of requests."""
    pending: dict[int, list[str]] = {}
    rows = (
        IdentityLookup.objects.filter(request_id__in=list(request_pks), status__in=OPEN_LOOKUP)
        .order_by("project__name")
        .values_list("request_id", "project__name", "project__lookup_paused_at")
    )
    for request_id, project, paused_at in rows:
        pending.setdefault(request_id, []).append(f"{project} (paused)" if paused_at else project)
    return pending
