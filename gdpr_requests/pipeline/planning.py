"""Planning: approved requests become MixpanelTask rows, in the transaction that moves them to processing.

Deletions for the same project and compliance type are coalesced: a request's ids first join an open task
(PENDING_SUBMIT, never attempted) that has room, up to the project's ``deletion_batch_size``; only then is a new
task made. A request's ids may spread over two tasks when the first fills up, so N ids need exactly
ceil(N / batch size) creates. A task that is not yet full waits GDPR_DELETION_COALESCE_SECONDS for more
approvals before it is submitted; a full one is due at once, and one that approved requests still waiting to
be planned would join is held back (``batches_awaiting_planning``). A retrieval serves one request in one
project (its file is that person's data). A request spanning several projects gets tasks in each.

Planning also serves a retried request: ids already covered by a live or succeeded task are not planned
again, and the failed tasks it counted on are retired (SUPERSEDED) so new ones replace them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import (
    DataSubjectRequest,
    DisclosureType,
    MixpanelProject,
    MixpanelTask,
    RequestKind,
    TaskKind,
    TaskRequestLink,
    TaskState,
)
from gdpr_requests.pipeline.enqueue import enqueue_plan
from gdpr_requests.pipeline.queries import compliance_type_of, due_filter
from gdpr_requests.pipeline.settling import settle_now
from gdpr_requests.pipeline.task_states import COVERING, FAILING
from gdpr_requests.pipeline.task_updates import SYSTEM
from gdpr_requests.pipeline.timing import after
from gdpr_requests.requests import services, states

logger = logging.getLogger("gdpr_requests.pipeline")

# Requests planned per transaction, and how long one sweep may run (under the Celery soft time limit).
PLAN_CHUNK = 200
PLAN_TIME_BUDGET_SECONDS = 60.0
# An open deletion task waits for a quiet GDPR_DELETION_COALESCE_SECONDS, at most this many windows in all.
COALESCE_MAX_WINDOWS = 20


def plan_approved() -> int:
    """Plan every approved request (beat). Returns how many requests moved to processing."""
    deadline = time.monotonic() + PLAN_TIME_BUDGET_SECONDS
    planned = 0
    seen: set[int] = set()
    while time.monotonic() < deadline:
        ids = list(
            DataSubjectRequest.objects.filter(status=states.APPROVED)
            .exclude(pk__in=seen)
            .order_by("approved_at", "pk")
            .values_list("pk", flat=True)[:PLAN_CHUNK]
        )
        if not ids:
            break
        seen.update(ids)
        planned += _plan_chunk(ids)
    return planned


def batches_awaiting_planning(*, project_id: int, now: datetime) -> set[int]:
    """The project's due deletion batches that the dispatch sweep should leave open a while longer: not full,
    and approved requests of the same compliance type that would join them are still waiting to be planned.

    Why: a batch that is not full becomes due once approvals stop reaching it for GDPR_DELETION_COALESCE_SECONDS
    (``_Planner._flush``). Planning messages go at the lowest priority (settings.CELERY_TASK_ROUTES), so while a
    bulk approval is being planned, planning pauses whenever workers have more urgent work: settling a finished
    batch's thousand requests takes every worker for seconds. The quiet window then passes while the requests
    that belong in the batch still wait in the queue, and the batch would be submitted part full (an extra create
    and poll, and its requests' ids split over more Mixpanel tasks). The hold ends when nothing of its kind is
    left to plan, or at the window rule's own bound, COALESCE_MAX_WINDOWS windows after the batch was opened.
    """
    window = float(settings.GDPR_DELETION_COALESCE_SECONDS)
    partial = [
        (pk, compliance_type)
        for pk, compliance_type, ids, batch_size in MixpanelTask.objects.filter(
            due_filter(now),
            project_id=project_id,
            kind=TaskKind.DELETION,
            state=TaskState.PENDING_SUBMIT,
            attempts=0,
            tracking_id="",
            parent__isnull=True,
            cancel_requested=False,
            created_at__gt=now - timedelta(seconds=window * COALESCE_MAX_WINDOWS),
        ).values_list("pk", "compliance_type", "distinct_ids", "project__deletion_batch_size")
        if len(ids or []) < max(1, batch_size)
    ]
    if not partial:
        return set()
    waiting = {
        regulation.upper()  # as compliance_type_of
        for regulation in DataSubjectRequest.objects.filter(
            status=states.APPROVED, kind=RequestKind.DELETION, projects__pk=project_id
        )
        .order_by()
        .values_list("regulation", flat=True)
        .distinct()
    }
    return {pk for pk, compliance_type in partial if compliance_type in waiting}


def request_plan(*, request_id: int) -> int:
    """Plan one approved request (after its approval or retry). Returns the number of tasks it counts on,
    or 0 when it was not approved (already planned, withdrawn, ...)."""
    if not _plan_chunk([request_id]):
        return 0
    return (
        MixpanelTask.objects.filter(requests__pk=request_id)
        .exclude(state__in=(TaskState.SUPERSEDED, TaskState.CANCELLED))
        .count()
    )


def request_plan_many(*, request_ids: list[int]) -> int:
    """Plan approved requests PLAN_CHUNK per transaction (a bulk approval's message). Returns how many moved
    to processing; the others were not approved any more (already planned, withdrawn, ...)."""
    planned = 0
    ids = list(dict.fromkeys(request_ids))
    for start in range(0, len(ids), PLAN_CHUNK):
        planned += _plan_chunk(ids[start : start + PLAN_CHUNK])
    return planned


def request_retry_tasks(*, request: DataSubjectRequest, actor: Actor) -> DataSubjectRequest:
    """Staff retry of a failed request: failed → approved, and its failed or needs-attention tasks are
    retired (SUPERSEDED) so that planning makes new ones for their ids. Planning follows after commit."""
    with transaction.atomic():
        request = services.request_retry(request=request, actor=actor)
        retired = _retire_failed_tasks([request.pk], actor=actor)
        audit_record(
            action="request.tasks_reset",
            actor=actor,
            request_reference=request.reference,
            payload={"task_count": retired},
        )
    return request


def _retire_failed_tasks(request_ids: list[int], *, actor: Actor = SYSTEM) -> int:
    failed = list(
        MixpanelTask.objects.select_for_update().filter(
            pk__in=TaskRequestLink.objects.filter(request_id__in=request_ids).values("task_id"), state__in=FAILING
        )
    )
    for task in failed:
        MixpanelTask.objects.filter(pk=task.pk, state=task.state).update(
            state=TaskState.SUPERSEDED, updated_at=timezone.now()
        )
        audit_record(
            action="task.superseded",
            actor=actor,
            payload={"task_id": task.pk, "kind": task.kind, "from": task.state, "why": "retry"},
        )
    return len(failed)


def _plan_chunk(request_ids: list[int]) -> int:
    with transaction.atomic():
        query = DataSubjectRequest.objects.filter(pk__in=request_ids, status=states.APPROVED)
        if connection.features.has_select_for_update_skip_locked:
            # Lock the rows so no transition moves them under us; another planner skips them.
            query = query.select_for_update(skip_locked=True, of=("self",))
        requests = list(query.order_by("approved_at", "pk"))
        if not requests:
            return 0
        _retire_failed_tasks([r.pk for r in requests])
        planner = _Planner(requests)
        planner.plan()
        for request in requests:
            services.request_start_processing(request=request, task_count=planner.task_count(request))
        # A retried request whose remaining tasks had all finished completes at once; one with nothing to do
        # in any active project fails for staff.
        for request in requests:
            if planner.task_count(request) == 0:
                services.request_fail(request=request, why="none of its Mixpanel projects is active")
        # Only a replanned request can have finished tasks already (fresh ones have none yet).
        settle_now(planner.replanned)
    return len(requests)


# First key of the two-key advisory locks that serialise deletion planning per project and compliance type.
_PLAN_LOCK_NAMESPACE = 0x504C414E  # "PLAN"


@dataclass
class _Open:
    """An open deletion task being filled, with a set for quick membership tests."""

    task: MixpanelTask
    batch: int
    ids: set[str] = field(default_factory=set)
    created: bool = False
    added: int = 0
    requests_added: int = 0


class _Planner:
    def __init__(self, requests: list[DataSubjectRequest]) -> None:
        self.requests = requests
        self.now = timezone.now()
        self.open: dict[tuple[int, str], list[_Open]] = {}
        self.links: dict[int, set[int]] = defaultdict(set)  # request pk -> task pks it counts on
        self.new_links: set[tuple[int, int]] = set()
        self.touched: dict[int, _Open] = {}
        self.created_retrievals: list[MixpanelTask] = []
        self.projects: dict[int, list[MixpanelProject]] = defaultdict(list)
        through = DataSubjectRequest.projects.through
        active = {p.pk: p for p in MixpanelProject.objects.filter(is_active=True)}
        for request_id, project_id in through.objects.filter(
            datasubjectrequest_id__in=[r.pk for r in requests]
        ).values_list("datasubjectrequest_id", "mixpanelproject_id"):
            if project_id in active:
                self.projects[request_id].append(active[project_id])
        # What earlier rounds already cover (a retried request): project -> ids, and retrievals per project.
        self.covered: dict[tuple[int, int], set[str]] = defaultdict(set)
        self.covered_retrieval: set[tuple[int, int]] = set()
        self.replanned: set[int] = set()
        for request_id, task_id, project_id, kind, ids in TaskRequestLink.objects.filter(
            request_id__in=[r.pk for r in requests], task__state__in=COVERING
        ).values_list("request_id", "task_id", "task__project_id", "task__kind", "task__distinct_ids"):
            self.links[request_id].add(task_id)
            self.replanned.add(request_id)
            if kind == TaskKind.RETRIEVAL:
                self.covered_retrieval.add((request_id, project_id))
            else:
                self.covered[(request_id, project_id)].update(ids or [])

    def task_count(self, request: DataSubjectRequest) -> int:
        return len(self.links[request.pk])

    def plan(self) -> None:
        self._lock_deletion_batches()
        for request in self.requests:
            for project in self.projects[request.pk]:
                if request.kind == RequestKind.DELETION:
                    self._plan_deletion(request, project)
                else:
                    self._plan_retrieval(request, project)
        self._flush()

    def _lock_deletion_batches(self) -> None:
        """Serialise planners that fill the same (project, compliance type) deletion batches.

        Row locks on the open tasks are not enough: two planners that both find no open batch with room would
        each create one, unseen by the other until commit, and Mixpanel would get two half-full creates. On
        PostgreSQL a transaction-scoped advisory lock per batch key, taken in sorted order (no deadlock between
        planners whose requests span several projects); SQLite's IMMEDIATE transaction already serialises them.
        """
        if connection.vendor != "postgresql":
            return
        keys = sorted(
            {
                (project.pk, compliance_type_of(request))
                for request in self.requests
                if request.kind == RequestKind.DELETION
                for project in self.projects[request.pk]
            }
        )
        with connection.cursor() as cursor:
            for project_id, compliance_type in keys:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)",
                    [_PLAN_LOCK_NAMESPACE, project_id * 2 + (compliance_type == "CCPA")],
                )

    def _link(self, request: DataSubjectRequest, task: MixpanelTask) -> None:
        if task.pk not in self.links[request.pk]:
            self.links[request.pk].add(task.pk)
            self.new_links.add((task.pk, request.pk))

    def _plan_retrieval(self, request: DataSubjectRequest, project: MixpanelProject) -> None:
        if (request.pk, project.pk) in self.covered_retrieval:
            return
        ccpa = request.regulation == states.CCPA
        task = MixpanelTask.objects.create(
            project=project,
            kind=TaskKind.RETRIEVAL,
            compliance_type=compliance_type_of(request),
            disclosure_type=(request.disclosure_type or DisclosureType.DATA) if ccpa else "",
            distinct_ids=list(request.distinct_ids),
            next_attempt_at=self.now,
        )
        self.created_retrievals.append(task)
        self._link(request, task)

    def _open_tasks(self, project: MixpanelProject, compliance_type: str) -> list[_Open]:
        key = (project.pk, compliance_type)
        if key not in self.open:
            # Never-attempted, unsplit tasks only: once a create was sent, its id list is what Mixpanel got.
            rows = (
                MixpanelTask.objects.select_for_update()
                .filter(
                    project=project,
                    kind=TaskKind.DELETION,
                    compliance_type=compliance_type,
                    state=TaskState.PENDING_SUBMIT,
                    attempts=0,
                    tracking_id="",
                    parent__isnull=True,
                    cancel_requested=False,
                )
                .order_by("pk")
            )
            batch = max(1, project.deletion_batch_size)
            self.open[key] = [_Open(task=row, batch=batch, ids=set(row.distinct_ids)) for row in rows]
        return self.open[key]

    def _plan_deletion(self, request: DataSubjectRequest, project: MixpanelProject) -> None:
        compliance_type = compliance_type_of(request)
        covered = self.covered[(request.pk, project.pk)]
        needed = [value for value in request.distinct_ids if value not in covered]
        if not needed:
            return
        candidates = self._open_tasks(project, compliance_type)
        # Ids that an open task already carries (the same person asked twice): join it, take no room.
        for entry in candidates:
            shared = [value for value in needed if value in entry.ids]
            if shared:
                self._join(entry, request, [])
                needed = [value for value in needed if value not in entry.ids]
        batch = max(1, project.deletion_batch_size)
        while needed:
            entry = next((c for c in candidates if len(c.ids) < c.batch), None)
            if entry is None:
                task = MixpanelTask.objects.create(
                    project=project,
                    kind=TaskKind.DELETION,
                    compliance_type=compliance_type,
                    distinct_ids=[],
                    next_attempt_at=after(float(settings.GDPR_DELETION_COALESCE_SECONDS), self.now),
                )
                entry = _Open(task=task, batch=batch, created=True)
                candidates.append(entry)
            room = entry.batch - len(entry.ids)
            taking, needed = needed[:room], needed[room:]
            self._join(entry, request, taking)

    def _join(self, entry: _Open, request: DataSubjectRequest, ids: list[str]) -> None:
        entry.task.distinct_ids = [*entry.task.distinct_ids, *ids]
        entry.ids.update(ids)
        entry.added += len(ids)
        if entry.task.pk not in self.links[request.pk]:
            entry.requests_added += 1
        self._link(request, entry.task)
        self.touched[entry.task.pk] = entry

    def _flush(self) -> None:
        window = float(settings.GDPR_DELETION_COALESCE_SECONDS)
        for entry in self.touched.values():
            task = entry.task
            if len(entry.ids) >= entry.batch:
                task.next_attempt_at = self.now  # nothing more can join: submit it now
            elif entry.added:
                # Approvals are still coming in: wait for a quiet window, but not past a bound, so a slow
                # trickle of approvals cannot hold the first ones back for long.
                created = task.created_at or self.now
                latest = after(window * COALESCE_MAX_WINDOWS, created)
                wanted = max(task.next_attempt_at or self.now, after(window, self.now))
                task.next_attempt_at = min(wanted, max(latest, task.next_attempt_at or self.now))
            task.save(update_fields=["distinct_ids", "next_attempt_at", "updated_at"])
        TaskRequestLink.objects.bulk_create(
            [TaskRequestLink(task_id=t, request_id=r) for t, r in sorted(self.new_links)], ignore_conflicts=True
        )
        for entry in self.touched.values():
            audit_record(
                action="task.planned",
                actor=SYSTEM,
                payload={
                    "task_id": entry.task.pk,
                    "kind": TaskKind.DELETION,
                    "project_pk": entry.task.project_id,
                    "compliance_type": entry.task.compliance_type,
                    "created": entry.created,
                    "ids_added": entry.added,
                    "requests_added": entry.requests_added,
                    "id_count": len(entry.ids),
                },
            )
        for task in self.created_retrievals:
            audit_record(
                action="task.planned",
                actor=SYSTEM,
                request_reference=next(r.reference for r in self.requests if task.pk in self.links[r.pk]),
                payload={
                    "task_id": task.pk,
                    "kind": TaskKind.RETRIEVAL,
                    "project_pk": task.project_id,
                    "compliance_type": task.compliance_type,
                    "created": True,
                    "id_count": len(task.distinct_ids),
                },
            )


def on_approved(request_id: int) -> None:
    """Transition hook helper: an approved (or retried, or resumed-to-approved) request gets planned soon."""
    enqueue_plan(request_id)
    logger.debug("planning of request %s enqueued", request_id)
