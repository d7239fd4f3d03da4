"""The Mixpanel pipeline: approved requests carried out against Mixpanel's GDPR API v3 (DESIGN.md "Processing").

- planning.py: approved requests become MixpanelTask rows (deletions coalesced up to the batch size);
- dispatch.py: the beat sweep claims due tasks and enqueues a step for each after commit;
- steps.py: one idempotent step of one task (submit, poll, cancel, download) and its outcomes;
- settling.py: a big batch's requests settle in chunk messages after its outcome commits; the catch-up sweep;
- credentials.py: a refused credential pauses the project and alerts staff; checks and resumption;
- cancel.py: withdrawal rules and cancelling a withdrawn request's tasks.

Importing this package registers its hooks with services (apps.py imports it at start-up): approval and
retry plan the request, withdrawal cancels its tasks, and a withdrawal Mixpanel can no longer honour is refused.
"""

from __future__ import annotations

from .. import services, states
from .cancel import cancel_guard, request_cancel_tasks, request_withdrawal_blocker
from .common import (
    DELETION_CAVEAT,
    api_call_record,
    backoff_seconds,
    enqueue_plan,
    logger,
    poll_delay,
    settle_requests,
)
from .credentials import (
    CheckResult,
    credential_failed,
    project_check_credentials,
    project_resume,
)
from .dispatch import dispatch_due
from .planning import plan_approved, request_plan, request_retry_tasks
from .settling import requests_settle, settle_finished
from .steps import task_step

__all__ = [
    "DELETION_CAVEAT",
    "CheckResult",
    "api_call_record",
    "backoff_seconds",
    "credential_failed",
    "dispatch_due",
    "plan_approved",
    "poll_delay",
    "project_check_credentials",
    "project_resume",
    "request_cancel_tasks",
    "request_plan",
    "request_retry_tasks",
    "request_withdrawal_blocker",
    "requests_settle",
    "settle_finished",
    "settle_requests",
    "task_step",
]


def on_transition(request_id: int, action: str, new_status: str) -> None:
    """services' after-commit hook. Never raises: the transition is committed, and the sweeps catch up."""
    try:
        if new_status == states.APPROVED and action in ("approve", "retry", "resume"):
            enqueue_plan(request_id)
        elif action == "cancel":
            request_cancel_tasks(request_id=request_id)
        elif action == "resume" and new_status == states.PROCESSING:
            # Tasks may have finished while the request was on hold.
            from django.db import transaction

            with transaction.atomic():
                settle_requests([request_id])
    except Exception:
        logger.exception("pipeline hook failed after %s of request %s", action, request_id)


services.register_transition_hook(on_transition)
services.register_cancel_guard(cancel_guard)
