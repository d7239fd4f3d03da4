"""The pipeline's hooks into the request services, connected in apps.py (GdprRequestsConfig.ready)."""

from __future__ import annotations

import logging

from django.db import transaction

from gdpr_requests.pipeline.cancel import request_cancel_tasks
from gdpr_requests.pipeline.enqueue import enqueue_plan, enqueue_plans
from gdpr_requests.pipeline.settling import settle_now
from gdpr_requests.requests import states

logger = logging.getLogger("gdpr_requests.pipeline")


def on_transition(request_id: int, action: str, new_status: str) -> None:
    """services' after-commit hook. Never raises: the transition is committed, and the sweeps catch up."""
    try:
        if new_status == states.APPROVED and action in ("approve", "retry", "resume"):
            enqueue_plan(request_id)
        elif action == "cancel":
            request_cancel_tasks(request_id=request_id)
        elif action == "resume" and new_status == states.PROCESSING:
            # Tasks may have finished while the request was on hold.
            with transaction.atomic():
                settle_now([request_id])
    except Exception:
        logger.exception("pipeline hook failed after %s of request %s", action, request_id)


def on_transitions(request_ids: list[int], action: str, new_status: str) -> None:
    """on_transition for a bulk transition (a bulk approval): planning goes in chunk messages."""
    try:
        if new_status == states.APPROVED and action in ("approve", "retry", "resume"):
            enqueue_plans(request_ids)
            return
    except Exception:
        logger.exception("pipeline hook failed after bulk %s of %d requests", action, len(request_ids))
        return
    for request_id in request_ids:
        on_transition(request_id, action, new_status)
