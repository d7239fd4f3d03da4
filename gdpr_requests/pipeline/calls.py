"""The Mixpanel client as the pipeline builds it: every HTTP attempt lands in ApiCall and the audit trail.

No ids, tokens or links are recorded: the client's CallRecord carries none."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction

from gdpr_requests.audit.chain import audit_record
from gdpr_requests.mixpanel.client import BASE_URLS, CallRecord, Credentials, MixpanelClient
from gdpr_requests.models import (
    ApiCall,
    MixpanelProject,
    MixpanelTask,
)
from gdpr_requests.pipeline.queries import request_reference_of
from gdpr_requests.pipeline.task_updates import SYSTEM

logger = logging.getLogger("gdpr_requests.pipeline")


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
    project: MixpanelProject, *, session: requests.Session, task: MixpanelTask | None = None
) -> MixpanelClient:
    """A client for ``project`` whose every HTTP attempt lands in ApiCall and the audit trail."""
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
        on_call=partial(_on_call, project=project, task=task, request_reference=reference),
    )


def _on_call(
    record: CallRecord, *, project: MixpanelProject, task: MixpanelTask | None, request_reference: str
) -> None:
    api_call_record(project=project, task=task, record=record, request_reference=request_reference)


def api_call_record(
    *, project: MixpanelProject, task: MixpanelTask | None, record: CallRecord, request_reference: str = ""
) -> ApiCall:
    """Log one HTTP attempt (no ids, tokens or links: the client's record carries none) and audit its outcome."""
    with transaction.atomic():
        call = ApiCall.objects.create(
            project=project,
            task=task,
            operation=record.operation,
            http_status=record.http_status,
            duration_ms=record.duration_ms,
            outcome=record.outcome,
        )
        payload: dict[str, Any] = {
            "operation": record.operation,
            "http_status": record.http_status,
            "outcome": record.outcome,
            "duration_ms": record.duration_ms,
            "project_pk": project.pk,
        }
        if task is not None:
            payload.update(task_id=task.pk, tracking_id=task.tracking_id, id_count=len(task.distinct_ids))
        audit_record(action="mixpanel.call", actor=SYSTEM, request_reference=request_reference, payload=payload)
    return call
