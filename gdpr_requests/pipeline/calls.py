"""The Mixpanel client as the pipeline builds it: every HTTP attempt lands in ApiCall and the audit trail.

A step's call is recorded before it is sent: ``api_call_begin`` commits an ApiCall row with outcome SENDING,
and the answer fills that same row in. A worker killed in between leaves the SENDING row behind, and the next
step of the task finds it (``api_calls_unanswered``): no call goes unrecorded, and a create whose answer was
lost is known to have possibly created a task at Mixpanel.

No ids, tokens or links are recorded: the client's CallRecord carries none."""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr_requests.audit.chain import audit_record
from gdpr_requests.mixpanel.client import BASE_URLS, OK, TRANSIENT, CallRecord, Credentials, MixpanelClient
from gdpr_requests.models import (
    ApiCall,
    CredentialStatus,
    MixpanelProject,
    MixpanelTask,
)
from gdpr_requests.pipeline.queries import request_reference_of
from gdpr_requests.pipeline.task_updates import SYSTEM

# ApiCall outcomes besides the client's (OK and the error kinds): sent, answer not recorded yet; and a call whose
# worker died before its answer was recorded (the next step of its task says so).
SENDING = "sending"
UNANSWERED = "unanswered"
# Outcomes of a create after which Mixpanel may hold a task we have no id of: the answer was lost (a dead worker,
# a timeout, a 5xx, a garbled 2xx) or it never reached the task. A 429 or another 4xx created nothing.
AMBIGUOUS_CREATE_OUTCOMES = (SENDING, UNANSWERED, OK, TRANSIENT)


# Hosts a retrieval result may be downloaded from besides the project's own base URL.
MIXPANEL_DOWNLOAD_HOSTS = frozenset(
    {urlsplit(url).hostname for url in BASE_URLS.values()}
    | {"api.mixpanel.com", "api-eu.mixpanel.com", "api-in.mixpanel.com", "data.mixpanel.com", "data-eu.mixpanel.com"}
)


def download_hosts(project: MixpanelProject) -> set[str]:
    hosts = set(MIXPANEL_DOWNLOAD_HOSTS)
    own = urlsplit(project.base_url).hostname
    if own:
        hosts.add(own)
    return hosts


def build_client(
    project: MixpanelProject,
    *,
    session: requests.Session,
    task: MixpanelTask | None = None,
    call: ApiCall | None = None,
) -> MixpanelClient:
    """A client for ``project`` whose every HTTP attempt lands in ApiCall and the audit trail. With ``call``
    (a SENDING row from api_call_begin), the first answer fills that row in instead of adding one."""
    credentials = Credentials(
        base_url=project.base_url,
        project_token=project.project_token,
        oauth_token=project.oauth_token,
        integration_id=settings.MIXPANEL_INTEGRATION_ID,
    )
    reference = request_reference_of(task) if task is not None else ""
    return MixpanelClient(
        credentials,
        timeout=float(settings.MIXPANEL_HTTP_TIMEOUT_SECONDS),
        session=session,
        on_call=partial(_on_call, project=project, task=task, request_reference=reference, pending=[call]),
    )


def _on_call(
    record: CallRecord,
    *,
    project: MixpanelProject,
    task: MixpanelTask | None,
    request_reference: str,
    pending: list[ApiCall | None],
) -> None:
    call = pending.pop() if pending else None
    api_call_record(project=project, task=task, record=record, request_reference=request_reference, call=call)


def api_call_begin(*, task: MixpanelTask, operation: str) -> ApiCall:
    """The SENDING row of a call about to be made for ``task``. Inside the transaction that starts the attempt,
    so that it is committed before anything is sent."""
    return ApiCall.objects.create(project_id=task.project_id, task=task, operation=operation, outcome=SENDING)


def api_call_record(
    *,
    project: MixpanelProject,
    task: MixpanelTask | None,
    record: CallRecord,
    request_reference: str = "",
    call: ApiCall | None = None,
) -> ApiCall:
    """Log one HTTP attempt (no ids, tokens or links: the client's record carries none) and audit its outcome.
    With ``call``, its SENDING row is filled in (if another step already wrote it off as unanswered, a new row
    keeps the late answer)."""
    fields = {
        "operation": record.operation,
        "http_status": record.http_status,
        "duration_ms": record.duration_ms,
        "outcome": record.outcome,
    }
    with transaction.atomic():
        updated = call is not None and ApiCall.objects.filter(pk=call.pk, outcome=SENDING).update(**fields) == 1
        if updated and call is not None:
            for name, value in fields.items():
                setattr(call, name, value)
        else:
            call = ApiCall.objects.create(project=project, task=task, **fields)
        _audit_call(project=project, task=task, request_reference=request_reference, call=call)
        if record.outcome == OK and task is not None:  # a check (no task) records its own verdict
            _credential_proven(project)
    return call


def _credential_proven(project: MixpanelProject) -> None:
    """A call Mixpanel answered with success proves the credential: a project whose status was never checked
    becomes OK (one conditional UPDATE, a no-op once it is). A FAILING project stays failing: resuming it is
    staff's decision (pipeline.credentials.project_resume), not a side effect of a call already in flight."""
    now = timezone.now()
    proven = MixpanelProject.objects.filter(pk=project.pk, credential_status=CredentialStatus.UNKNOWN).update(
        credential_status=CredentialStatus.OK, credential_checked_at=now, credential_error="", updated_at=now
    )
    if proven:
        project.credential_status = CredentialStatus.OK
        project.credential_checked_at = now
        audit_record(
            action="project.credential_checked",
            actor=SYSTEM,
            payload={"project_pk": project.pk, "result": "ok", "by": "api_call"},
        )


def api_calls_unanswered(*, task: MixpanelTask) -> list[ApiCall]:
    """Write off the task's SENDING rows as UNANSWERED (their worker died before recording the answer) and
    audit each as a call. Inside the transaction of a step that holds the task's lease, so no live worker
    still waits for those answers. Returns the rows, oldest first."""
    stale = list(task.api_calls.filter(outcome=SENDING).order_by("created_at", "pk"))
    if not stale:
        return []
    ApiCall.objects.filter(pk__in=[c.pk for c in stale], outcome=SENDING).update(outcome=UNANSWERED)
    reference = request_reference_of(task)
    for call in stale:
        call.outcome = UNANSWERED
        _audit_call(project=task.project, task=task, request_reference=reference, call=call)
    return stale


def _audit_call(*, project: MixpanelProject, task: MixpanelTask | None, request_reference: str, call: ApiCall) -> None:
    payload: dict[str, Any] = {
        "operation": call.operation,
        "http_status": call.http_status,
        "outcome": call.outcome,
        "duration_ms": call.duration_ms,
        "project_pk": project.pk,
        "api_call_id": call.pk,
    }
    if task is not None:
        payload.update(task_id=task.pk, tracking_id=task.tracking_id, id_count=len(task.distinct_ids))
    audit_record(action="mixpanel.call", actor=SYSTEM, request_reference=request_reference, payload=payload)
