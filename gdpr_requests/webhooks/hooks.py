"""The webhooks' hooks into the request services, connected in apps.py (GdprRequestsConfig.ready)."""

from __future__ import annotations

import logging

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.webhooks.services import TRANSITION_EVENTS, events_record

logger = logging.getLogger("gdpr_requests.webhooks")


def after_intake(requests: list[DataSubjectRequest]) -> None:
    # Inside the intake transaction: the deliveries commit with the requests, or not at all.
    events_record(event_type="request.created", requests=requests)


def after_transition(request_id: int, action: str, new_status: str) -> None:
    """After the transition's commit: the change stands whatever happens here, so a failure to record the
    webhook is logged rather than raised at the person who made the change."""
    event_type = TRANSITION_EVENTS.get(action)
    if event_type is None:
        return
    try:
        dsr = DataSubjectRequest.objects.filter(pk=request_id).first()
        if dsr is not None:
            events_record(event_type=event_type, requests=[dsr])
    except Exception:
        logger.exception("could not record the %s webhook for request id %s", event_type, request_id)
