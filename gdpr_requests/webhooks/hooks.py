"""The webhooks' hooks into the request services, connected in apps.py (GdprRequestsConfig.ready)."""

from __future__ import annotations

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.webhooks.services import TRANSITION_EVENTS, events_record


def after_intake(requests: list[DataSubjectRequest]) -> None:
    # Inside the intake transaction: the deliveries commit with the requests, or not at all.
    events_record(event_type="request.created", requests=requests)


def after_transition(request_id: int, action: str, new_status: str) -> None:
    event_type = TRANSITION_EVENTS.get(action)
    if event_type is None:
        return
    dsr = DataSubjectRequest.objects.filter(pk=request_id).first()
    if dsr is not None:
        events_record(event_type=event_type, requests=[dsr])
