"""The subject emails' hooks into the request services, connected in apps.py (GdprRequestsConfig.ready)."""

from __future__ import annotations

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.notifications.outbox import notify_many_after_commit
from gdpr_requests.notifications.rendering import TRANSITION_EVENTS
from gdpr_requests.requests import states


def record_transitions(request_ids: list[int], action: str, new_status: str) -> None:
    """A transition recorder (inside the transition's transaction): the subject's email is due exactly when the
    transition commits, and is queued after the commit."""
    if action in TRANSITION_EVENTS:
        notify_many_after_commit([(request_id, action) for request_id in request_ids])


def after_intake(requests: list[DataSubjectRequest]) -> None:
    # Every channel: a request that starts unverified asks its requester to confirm their email.
    notify_many_after_commit([(dsr.pk, "created") for dsr in requests if dsr.status == states.UNVERIFIED])
