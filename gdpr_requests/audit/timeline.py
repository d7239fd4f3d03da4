"""A request's audit events as sentences people read: "Approved by alice", "Deletion sent to Mixpanel (Web app),
task 4f3a9c01…", "Confirmation email sent".

``human_timeline(events, *, include_machine_steps)`` returns TimelineEntry(at, sentence, kind) oldest first, with
``at`` in the current time zone. ``kind`` is "decision" (what staff or the requester decided, and the request's
own outcomes), "step" (what the system did: tasks, emails, exports) or "api_call" (single calls to Mixpanel and
status polls, only with ``include_machine_steps``). Staff names are actor labels (staff, not subjects); nothing
here reads personal data: payloads hold counts, codes and references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from django.utils import timezone

from gdpr_requests.models import Channel, MixpanelProject, RejectionGround

DECISION, STEP, API_CALL = "decision", "step", "api_call"
DATE_FORMAT = "j M Y, H:i"  # the one format the timeline uses (admin templates and the evidence pack)


class EventLike(Protocol):
    occurred_at: datetime
    actor_type: str
    actor_label: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    sentence: str
    kind: str


EMAILS = {
    "created": "Confirmation email sent",
    "verify": "Email sent: the request is confirmed",
    "extend": "Email sent: the deadline is extended",
    "complete": "Completion email sent",
    "reject": "Rejection email sent",
    "cancel": "Withdrawal email sent",
    "expire": "Expiry email sent",
    "duplicate": "Email sent: a request is already open",
    "resend": "New confirmation link sent",
    "download_code": "Download code sent",
}
KIND_WORDS = {"deletion": "Deletion", "retrieval": "Retrieval", "access": "Access"}


def _by(event: EventLike) -> str:
    if event.actor_type in ("staff", "auditor") and event.actor_label:
        return f" by {event.actor_label}"
    if event.actor_type == "subject":
        return " by the requester"
    return ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _task_words(event: EventLike, projects: Mapping[int, str]) -> tuple[str, str, str]:
    """(Kind word, " (project)", ", task abcd1234…") for a task event."""
    payload = event.payload
    kind = KIND_WORDS.get(str(payload.get("kind", "")), "Task")
    project = projects.get(payload.get("project_pk") or 0, "")
    tracking = str(payload.get("tracking_id") or "")
    return kind, f" ({project})" if project else "", f", task {tracking[:8]}…" if tracking else ""


def _created(e: EventLike, p: Mapping[int, str]) -> str:
    payload = e.payload
    channel = dict(Channel.choices).get(payload.get("channel", ""), "")
    kind = str(payload.get("kind", "")).lower()
    regulation = str(payload.get("regulation", "")).upper()
    ids = payload.get("distinct_id_count")
    detail = f": {kind} under {regulation}" if kind and regulation else ""
    ids_part = f", {_plural(ids, 'distinct id')}" if isinstance(ids, int) else ""
    return f"Request received{' through the ' + channel.lower() if channel else ''}{detail}{ids_part}"


def _verify(e: EventLike, p: Mapping[int, str]) -> str:
    if e.payload.get("method") == "email":
        return "The requester confirmed their email address"
    return f"Identity checked{_by(e)}"


def _approve(e: EventLike, p: Mapping[int, str]) -> str:
    approvers = e.payload.get("approvers")
    if approvers:
        return f"Approved by {' and '.join(approvers)} (two approvers)"
    if e.actor_type == "system":
        return "Approved automatically"
    return f"Approved{_by(e)}"


def _approval_recorded(e: EventLike, p: Mapping[int, str]) -> str:
    count, required = e.payload.get("approvals"), e.payload.get("required")
    return f"Approval {count} of {required}{_by(e)}; waiting for a different staff member"


def _reject(e: EventLike, p: Mapping[int, str]) -> str:
    ground = dict(RejectionGround.choices).get(e.payload.get("ground", ""), "")
    return f"Rejected{_by(e)}" + (f": {ground[0].lower()}{ground[1:]}" if ground else "")


def _cancel(e: EventLike, p: Mapping[int, str]) -> str:
    return "Withdrawn by the requester" if e.actor_type == "subject" else f"Cancelled{_by(e)}"


def _ids_changed(e: EventLike, p: Mapping[int, str]) -> str:
    sentence = f"Distinct ids changed{_by(e)} (now {e.payload.get('count_after', '?')})"
    return sentence + ("; earlier approvals voided" if e.payload.get("approvals_voided") else "")


def _projects_changed(e: EventLike, p: Mapping[int, str]) -> str:
    names = ", ".join(e.payload.get("projects") or []) or "none"
    sentence = f"Mixpanel projects set{_by(e)}: {names}"
    return sentence + ("; earlier approvals voided" if e.payload.get("approvals_voided") else "")


def _assigned(e: EventLike, p: Mapping[int, str]) -> str:
    assignee = e.payload.get("assignee")
    return f"Assigned to {assignee}{_by(e)}" if assignee else f"Unassigned{_by(e)}"


def _extended(e: EventLike, p: Mapping[int, str]) -> str:
    to = e.payload.get("to_due_at", "")
    return f"Deadline extended{_by(e)}" + (f" to {_day(to)}" if to else "")


def _day(iso: str) -> str:
    try:
        day = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{day.day} {day:%b %Y}"


def _start(e: EventLike, p: Mapping[int, str]) -> str:
    count = e.payload.get("task_count")
    return "Processing started" + (f": {_plural(count, 'Mixpanel task')}" if isinstance(count, int) else "")


def _fail(e: EventLike, p: Mapping[int, str]) -> str:
    why = e.payload.get("why")
    return "Processing failed" + (f": {why}" if why else "") + "; waiting for staff"


def _notification(e: EventLike, p: Mapping[int, str]) -> str:
    event = str(e.payload.get("event", ""))
    return EMAILS.get(event.partition(":")[0], "Email sent to the requester")


def _task_planned(e: EventLike, p: Mapping[int, str]) -> str:
    kind, project, _ = _task_words(e, p)
    return f"{kind} planned for Mixpanel{project}"


def _task_submitted(e: EventLike, p: Mapping[int, str]) -> str:
    kind, project, task = _task_words(e, p)
    return f"{kind} sent to Mixpanel{project}{task}"


def _task_succeeded(e: EventLike, p: Mapping[int, str]) -> str:
    kind, project, task = _task_words(e, p)
    return f"Mixpanel finished the {kind.lower()}{project}{task}"


def _task_failed(e: EventLike, p: Mapping[int, str]) -> str:
    kind, project, task = _task_words(e, p)
    return f"Mixpanel {kind.lower()} failed{project}{task}"


def _task_status(e: EventLike, p: Mapping[int, str]) -> str:
    kind, project, task = _task_words(e, p)
    status = e.payload.get("status") or e.payload.get("remote_status") or "a new status"
    return f"Mixpanel reported {status} for the {kind.lower()}{project}{task}"


def _api_call(e: EventLike, p: Mapping[int, str]) -> str:
    payload = e.payload
    project = p.get(payload.get("project_pk") or 0, "")
    operation = str(payload.get("operation", "call")).replace("_", " ")
    status = payload.get("http_status")
    took = payload.get("duration_ms")
    parts = [f"HTTP {status}" if status else str(payload.get("outcome", "no answer"))]
    if isinstance(took, int):
        parts.append(f"{took} ms")
    return f"API call to Mixpanel{' (' + project + ')' if project else ''}: {operation}, {', '.join(parts)}"


def _generic_task(e: EventLike, p: Mapping[int, str]) -> str:
    kind, project, task = _task_words(e, p)
    what = e.action.partition(".")[2].replace("_", " ")
    return f"{kind} {what}{project}{task}"


Phrase = Callable[[EventLike, Mapping[int, str]], str]
SENTENCES: dict[str, tuple[str, Phrase]] = {
    "request.created": (DECISION, _created),
    "request.verify": (DECISION, _verify),
    "request.approve": (DECISION, _approve),
    "request.approval_recorded": (DECISION, _approval_recorded),
    "request.reject": (DECISION, _reject),
    "request.hold": (DECISION, lambda e, p: f"Put on hold{_by(e)}"),
    "request.resume": (DECISION, lambda e, p: f"Resumed{_by(e)}"),
    "request.cancel": (DECISION, _cancel),
    "request.retry": (DECISION, lambda e, p: f"Failed parts retried{_by(e)}"),
    "request.expire": (DECISION, lambda e, p: "Expired: the email address was not confirmed in time"),
    "request.complete": (DECISION, lambda e, p: "Completed"),
    "request.fail": (DECISION, _fail),
    "request.extended": (DECISION, _extended),
    "request.assigned": (DECISION, _assigned),
    "request.note_added": (DECISION, lambda e, p: f"Internal note added{_by(e)}"),
    "request.distinct_ids_changed": (DECISION, _ids_changed),
    "request.projects_changed": (DECISION, _projects_changed),
    "request.verification_resent": (DECISION, lambda e, p: f"Confirmation link resent{_by(e)}"),
    "request.links_resent": (DECISION, lambda e, p: "The requester asked for their links again"),
    "request.duplicate_submitted": (DECISION, lambda e, p: "The requester submitted the same request again"),
    "request.purged": (STEP, lambda e, p: "Personal details removed at the end of the retention period"),
    "request.start_processing": (STEP, _start),
    "request.tasks_reset": (STEP, lambda e, p: f"Mixpanel tasks reset{_by(e)}"),
    "notification.sent": (STEP, _notification),
    "task.planned": (STEP, _task_planned),
    "task.submitted": (STEP, _task_submitted),
    "task.succeeded": (STEP, _task_succeeded),
    "task.failed": (STEP, _task_failed),
    "task.status": (API_CALL, _task_status),
    "mixpanel.call": (API_CALL, _api_call),
    "export.stored": (STEP, lambda e, p: "Export file stored for the requester"),
    "export.downloaded": (DECISION, lambda e, p: "The requester downloaded their export"),
    "export.deleted": (STEP, lambda e, p: "Export file deleted"),
    "export.code_issued": (STEP, lambda e, p: "Download code issued"),
    "export.code_requested": (STEP, lambda e, p: "The requester asked for a download code"),
    "export.code_rejected": (STEP, lambda e, p: "A wrong download code was entered"),
}


def _fallback(event: EventLike) -> tuple[str, Phrase]:
    if event.action.startswith("task."):
        return STEP, _generic_task
    what = event.action.partition(".")[2].replace("_", " ") or event.action
    kind = DECISION if event.actor_type in ("staff", "subject") else STEP
    return kind, lambda e, p: f"{what[0].upper()}{what[1:]}{_by(e)}"


def _project_names(events: list[EventLike]) -> dict[int, str]:
    pks = {e.payload.get("project_pk") for e in events if isinstance(e.payload.get("project_pk"), int)}
    if not pks:
        return {}
    return dict(MixpanelProject.objects.filter(pk__in=pks).values_list("pk", "name"))


def human_timeline(
    events: Iterable[EventLike], *, include_machine_steps: bool, project_names: Mapping[int, str] | None = None
) -> list[TimelineEntry]:
    """The events as sentences, oldest first; API calls and status polls only with ``include_machine_steps``.

    ``project_names`` (pk -> name) saves the one query that names the projects the events mention.
    """
    ordered = sorted(events, key=lambda e: e.occurred_at)
    names = dict(project_names) if project_names is not None else _project_names(ordered)
    entries = []
    for event in ordered:
        kind, phrase = SENTENCES.get(event.action) or _fallback(event)
        if kind == API_CALL and not include_machine_steps:
            continue
        entries.append(
            TimelineEntry(at=timezone.localtime(event.occurred_at), sentence=phrase(event, names), kind=kind)
        )
    return entries
