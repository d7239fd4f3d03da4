"""The Mixpanel pipeline: approved requests carried out against Mixpanel's GDPR API v3 (DESIGN.md "Processing").

- planning.py: approved requests become MixpanelTask rows (deletions coalesced up to the batch size);
- dispatch.py: the beat sweep claims due tasks and enqueues a step for each after commit;
- steps.py: one idempotent step of one task (submit, poll, cancel, download) and its outcomes;
- settling.py: a big batch's requests settle in chunk messages after its outcome commits; the catch-up sweep;
- credentials.py: a refused credential pauses the project and alerts staff; checks and resumption;
- cancel.py: withdrawal rules and cancelling a withdrawn request's tasks.

Its hooks into the request services (hooks.py) are connected in apps.py: approval and retry plan the request,
withdrawal cancels its tasks, and a withdrawal Mixpanel can no longer honour is refused.
"""

from __future__ import annotations

from gdpr_requests.pipeline.calls import api_call_record
from gdpr_requests.pipeline.cancel import request_cancel_tasks, request_withdrawal_blocker
from gdpr_requests.pipeline.credentials import CheckResult, credential_failed, project_check_credentials, project_resume
from gdpr_requests.pipeline.dispatch import dispatch_due
from gdpr_requests.pipeline.planning import plan_approved, request_plan, request_plan_many, request_retry_tasks
from gdpr_requests.pipeline.settling import DELETION_CAVEAT, settle_chunk, settle_finished, settle_now
from gdpr_requests.pipeline.steps import task_step
from gdpr_requests.pipeline.timing import backoff_seconds, poll_delay

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
    "request_plan_many",
    "request_retry_tasks",
    "request_withdrawal_blocker",
    "settle_chunk",
    "settle_finished",
    "settle_now",
    "task_step",
]
