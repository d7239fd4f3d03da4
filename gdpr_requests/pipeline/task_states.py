"""The pipeline's groups of task states (ours) and Mixpanel's remote statuses."""

from __future__ import annotations

from gdpr_requests.models import (
    MixpanelTask,
    TaskKind,
    TaskState,
)

# States a sweep may hand to a worker.
DISPATCHABLE = (TaskState.PENDING_SUBMIT, TaskState.SUBMITTED, TaskState.DOWNLOADING)


# States whose ids count as being taken care of (planning does not plan them again).
COVERING = (*DISPATCHABLE, TaskState.PAUSED, TaskState.SUCCEEDED)


# States that no longer count for a request: replaced by other tasks, or withdrawn.
RETIRED = (TaskState.SUPERSEDED, TaskState.CANCELLED)


# States that send a request to `failed` for staff.
FAILING = (TaskState.FAILED, TaskState.NEEDS_ATTENTION)


# Remote statuses (MIXPANEL_GDPR_API.md).
PENDING, STAGING, STARTED = "PENDING", "STAGING", "STARTED"


SUCCESS, FAILURE, REVOKED, REMOTE_NOT_FOUND, UNKNOWN = "SUCCESS", "FAILURE", "REVOKED", "NOT_FOUND", "UNKNOWN"


CANCELLABLE_REMOTE = ("", PENDING, STAGING)


# Written into status_history when Mixpanel refused a cancel, so that no step tries again.
CANCEL_REFUSED = "CANCEL_REFUSED"


# The first status_history entry of a task we learnt about from a 409 (it may not be ours).
LINKED_BY_CONFLICT = "LINKED_BY_CONFLICT"


def is_deletion(task: MixpanelTask) -> bool:
    return task.kind == TaskKind.DELETION


# The status_history entry of a task that took the tracking id a 409 named after its own create's answer was lost.
ADOPTED = "ADOPTED"
