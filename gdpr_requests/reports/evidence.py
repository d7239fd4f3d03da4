"""The evidence pack for one request: what happened to it, who did it, and how to check it against the trail.

The pack is plain JSON-ready data (the JSON twin is this data as it is; the PDF renders it). It carries as
little personal data as the proof needs: the reference, facts and dates, and a prefix of the keyed email hash
that links the request to the trail's ``request.created`` event; never the name, the email or the distinct
ids. Its audit events are exported whole, with their hashes, and each event's HMAC is re-checked when the pack
is built, so a reader with the chain key can check them again, and against a full trail export, whose header
names the same chain head.

Two lists of events: ``timeline``, the events recorded under the request's reference, and ``task_events``, the
events of its Mixpanel tasks that name no request. A deletion coalesced with other requests is one task, and
what happens to it (submitted, polled, succeeded, failed...) is recorded against the task, not against any one
of the requests it serves; without these the pack would not show the deletion being carried out.
"""

from __future__ import annotations

import hmac
import json
import re
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from gdpr_requests.audit import chain as audit
from gdpr_requests.audit.timeline import human_timeline
from gdpr_requests.identity import selectors as identity_selectors
from gdpr_requests.models import (
    ApiCall,
    AuditEvent,
    DataSubjectRequest,
    DeletionApproval,
    MixpanelProject,
    MixpanelTask,
    RequestRejection,
    SubjectExport,
    TaskRequestLink,
)
from gdpr_requests.reports.summary import ANSWERED_STATES
from gdpr_requests.requests import approval_rules

SCHEMA = "dsr-evidence-pack/1"
EMAIL_HASH_PREFIX_LENGTH = 16  # the same prefix the request.created audit event records
REFERENCE_RE = re.compile(r"^DSR-[0-9A-Z]{4}-[0-9A-Z]{4}$")


class EvidenceNotFound(LookupError):
    """No request has that reference (the message is fit to show a user)."""


def normalise_reference(value: str) -> str:
    """Upper-case and trim a typed reference; raise ValueError when it cannot be one."""
    reference = (value or "").strip().upper()
    if not REFERENCE_RE.match(reference):
        raise ValueError("A reference looks like DSR-7K4Q-9XWM.")
    return reference


def _dt(value: datetime | None) -> str | None:
    return None if value is None else timezone.localtime(value).isoformat(timespec="seconds")


def _d(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def build_evidence_pack(*, reference: str, generated_by: str = "", now: datetime | None = None) -> dict[str, Any]:
    """Collect the evidence for the request ``reference`` (raises EvidenceNotFound)."""
    request = (
        DataSubjectRequest.objects.filter(reference=reference)
        .select_related("verified_by", "approved_by", "extended_by")
        .prefetch_related("projects")
        .first()
    )
    if request is None:
        raise EvidenceNotFound(f"No request has the reference {reference}.")
    now = now or timezone.now()
    head_sequence, head_hash = audit.chain_head()
    event_rows = list(AuditEvent.objects.filter(request_reference=reference).order_by("sequence"))
    events = [audit.event_record(event) for event in event_rows]
    tasks = [
        link.task
        for link in TaskRequestLink.objects.filter(request=request)
        .select_related("task", "task__project")
        .order_by("task__created_at", "task_id")
    ]
    task_events = _task_events(tasks)
    key = settings.AUDIT_CHAIN_KEY.encode()

    def unverified(records: list[dict[str, Any]]) -> list[int]:
        return [
            record["sequence"]
            for record in records
            if not hmac.compare_digest(audit.compute_hash(record["prev_hash"], record, key=key), record["hash"])
        ]

    unverified_request, unverified_task = unverified(events), unverified(task_events)
    closed_on_time = None
    if request.closed_at is not None and request.status in ANSWERED_STATES:
        closed_on_time = timezone.localtime(request.closed_at).date() <= request.due_at

    return {
        "schema": SCHEMA,
        "organisation": settings.ORGANISATION_NAME,
        "generated_at": _dt(now),
        "generated_by": generated_by,
        "request": {
            "reference": request.reference,
            "kind": request.kind,
            "regulation": request.regulation,
            "disclosure_type": request.disclosure_type,
            "channel": request.channel,
            "language": request.language,  # the language of the subject's emails and pages
            "status": request.status,
            "email_hash_prefix": request.email_hash[:EMAIL_HASH_PREFIX_LENGTH],
            "distinct_id_count": len(request.distinct_ids or []),
            "projects": sorted(project.name for project in request.projects.all()),
            "received_at": _dt(request.received_at),
            "verified_at": _dt(request.verified_at),
            "verified_by": request.verified_by.get_username() if request.verified_by else "",
            "approved_at": _dt(request.approved_at),
            "approved_by": request.approved_by.get_username() if request.approved_by else "",
            "closed_at": _dt(request.closed_at),
            "original_due_at": _d(request.original_due_at),
            "due_at": _d(request.due_at),
            "extended_at": _dt(request.extended_at),
            "extended_by": request.extended_by.get_username() if request.extended_by else "",
            "extension_reason": request.extension_reason,
            "rejection_reason": request.rejection_reason,
            "closed_on_time": closed_on_time,
            "personal_data_purged_at": _dt(request.purged_at),
        },
        "decisions": _decisions(request),
        "identity_lookups": [
            {**row, "looked_up_at": _dt(row["looked_up_at"])} for row in identity_selectors.evidence_for(request)
        ],
        "timeline": events,
        # The same events as the staff timeline tells them (audit/timeline.py), for people; the records above
        # are what the hashes cover.
        "timeline_readable": _readable(event_rows),
        "task_events": task_events,
        "tasks": _tasks(tasks, task_events),
        "export": _export(request),
        "chain": {
            "head_sequence": head_sequence,
            "head_hash": head_hash,
            "genesis_hash": audit.GENESIS_HASH,
            "request_event_count": len(events),
            "request_events_verified": not unverified_request,
            "task_event_count": len(task_events),
            "task_events_verified": not unverified_task,
            "unverified_sequences": sorted(unverified_request + unverified_task),
            "algorithm": "HMAC-SHA256(key, prev_hash + canonical JSON of the event without sequence and hashes)",
        },
    }


def _decisions(request: DataSubjectRequest) -> dict[str, Any]:
    """Who approved (every approval of a deletion that needed two), and on what ground a rejection was made."""
    rejection = RequestRejection.objects.filter(request=request).first()
    return {
        "approvals_required": approval_rules.approvals_required(request),
        "approvals": [
            {"by": approval.approver.get_username(), "at": _dt(approval.approved_at)}
            for approval in DeletionApproval.objects.filter(request=request).select_related("approver")
        ],
        "rejection_ground": rejection.get_ground_display() if rejection is not None else "",
    }


def _readable(events: list[AuditEvent]) -> list[dict[str, Any]]:
    names = dict(MixpanelProject.objects.values_list("pk", "name"))
    readable = []
    for event in events:
        entry = human_timeline([event], include_machine_steps=True, project_names=names)[0]
        readable.append(
            {
                "sequence": event.sequence,
                "at": _dt(event.occurred_at),
                "sentence": entry.sentence,
                "kind": entry.kind,
                "hash": event.hash,
            }
        )
    return readable


def _task_events(tasks: list[MixpanelTask]) -> list[dict[str, Any]]:
    """The events of these tasks that name no request, in sequence order, as exported.

    The pipeline records a task's events with ``payload["task_id"]`` (``pipeline.common.task_audit``,
    ``api_call_record``, planning) and with a request reference only while the task serves exactly one request;
    those are in the timeline already. Events that name another request stay out even when they concern a
    shared task (a task may serve a second request only after a 409 linked it): they are that request's, and
    one person's pack must not tell another person's request. One query whatever the number of tasks and
    events; Django compiles the key lookup for SQLite (JSON_EXTRACT) and PostgreSQL (->) alike.
    """
    if not tasks:
        return []
    task_ids = [task.pk for task in tasks]
    events = AuditEvent.objects.filter(request_reference="", payload__task_id__in=task_ids).order_by("sequence")
    return [audit.event_record(event) for event in events]


def _tasks(tasks: list[MixpanelTask], task_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sequences: dict[int, list[int]] = {}
    for record in task_events:
        sequences.setdefault(record["payload"]["task_id"], []).append(record["sequence"])
    served: dict[int, int] = {}
    for task_id in TaskRequestLink.objects.filter(task__in=tasks).values_list("task_id", flat=True):
        served[task_id] = served.get(task_id, 0) + 1
    calls: dict[int, list[dict[str, Any]]] = {}
    for call in ApiCall.objects.filter(task__in=tasks).order_by("created_at", "id"):
        calls.setdefault(call.task_id, []).append(
            {
                "at": _dt(call.created_at),
                "operation": call.operation,
                "http_status": call.http_status,
                "outcome": call.outcome,
                "duration_ms": call.duration_ms,
            }
        )
    return [
        {
            "id": task.pk,
            "parent_id": task.parent_id,
            "project": task.project.name,
            "kind": task.kind,
            "compliance_type": task.compliance_type,
            "disclosure_type": task.disclosure_type,
            "tracking_id": task.tracking_id,
            "state": task.state,
            "remote_status": task.remote_status,
            "status_history": task.status_history,
            "requesting_user": task.requesting_user,
            "attempts": task.attempts,
            "polls": task.polls,
            "distinct_id_count": len(task.distinct_ids or []),
            "requests_served": served.get(task.pk, 0),
            "created_at": _dt(task.created_at),
            "submitted_at": _dt(task.submitted_at),
            "finished_at": _dt(task.finished_at),
            "last_error": task.last_error,
            "api_calls": calls.get(task.pk, []),
            "task_event_sequences": sequences.get(task.pk, []),
        }
        for task in tasks
    ]


def _export(request: DataSubjectRequest) -> dict[str, Any] | None:
    export = SubjectExport.objects.filter(request=request).first()
    if export is None:
        return None
    return {
        "sha256": export.sha256,
        "size": export.size,
        "content_type": export.content_type,
        "created_at": _dt(export.created_at),
        "expires_at": _dt(export.expires_at),
        "deleted_at": _dt(export.deleted_at),
        "download_count": export.download_count,
        "last_downloaded_at": _dt(export.last_downloaded_at),
    }


def evidence_json(pack: dict[str, Any]) -> bytes:
    """The JSON twin of a pack: UTF-8, indented, keys in the builder's order."""
    return (json.dumps(pack, indent=2, ensure_ascii=False, default=str) + "\n").encode()
