"""Identity lookups' hooks into the request services, connected in apps.py (GdprRequestsConfig.ready)."""

from __future__ import annotations

import logging

from django.db import transaction

from gdpr_requests.identity.services import lookups_open
from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.requests import states

logger = logging.getLogger("gdpr_requests.identity")


def on_transition(request_id: int, action: str, new_status: str) -> None:
    """After-commit hook: a request that became verified waits for its lookups. Never raises (the transition is
    committed; ``dsr resolve`` queues a lookup by hand)."""
    if action != "verify" or new_status != states.VERIFIED:
        return
    try:
        with transaction.atomic():
            lookups_open(request_ids=[request_id])
    except Exception:
        logger.exception("identity lookup could not be queued after verification of request %s", request_id)


def after_intake(requests: list[DataSubjectRequest]) -> None:
    """Intake hook, inside the intake's transaction: requests created already verified (staff, import, the API,
    a cohort) wait for their lookups from the start."""
    verified = [dsr.pk for dsr in requests if dsr.status == states.VERIFIED]
    if verified:
        lookups_open(request_ids=verified)
