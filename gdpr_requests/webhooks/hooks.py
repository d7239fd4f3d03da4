"""The webhooks' hooks into the request services, connected in apps.py (GdprRequestsConfig.ready)."""

from __future__ import annotations

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.webhooks.services import TRANSITION_EVENTS, events_record, subscribed_endpoints


def after_intake(requests: list[DataSubjectRequest]) -> None:
    # Inside the intake transaction: the deliveries commit with the requests, or not at all.
    events_record(event_type="request.created", requests=requests)


def record_transitions(request_ids: list[int], action: str, new_status: str) -> None:
    """Inside the transition's transaction (a transition recorder): the deliveries commit with the change, so
    a crash after the commit cannot lose an event. One query when no endpoint takes the event, and a fixed
    handful (the endpoints read once) for a bulk transition of any size when one does."""
    event_type = TRANSITION_EVENTS.get(action)
    if event_type is None:
        return
    endpoints = subscribed_endpoints(event_type)
    if not endpoints:
        return
    requests = list(DataSubjectRequest.objects.filter(pk__in=request_ids).order_by("pk"))
    events_record(event_type=event_type, requests=requests, endpoints=endpoints)
