"""Read-only queries the pipeline's steps share: the requests and ids a task still serves, due tasks."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.text import slugify

from gdpr_requests.models import (
    DataSubjectRequest,
    MixpanelProject,
    MixpanelTask,
)
from gdpr_requests.pipeline.task_states import DISPATCHABLE
from gdpr_requests.requests import states


def live_requests(task: MixpanelTask) -> QuerySet[DataSubjectRequest]:
    """The requests a task still serves: withdrawn ones no longer count."""
    return DataSubjectRequest.objects.filter(tasks=task).exclude(status=states.CANCELLED)


def live_ids(task: MixpanelTask) -> list[str]:
    """The task's distinct ids that some request it still serves asks for (task order kept)."""
    wanted: set[str] = set()
    for ids in live_requests(task).values_list("distinct_ids", flat=True):
        wanted.update(ids or [])
    return [value for value in task.distinct_ids if value in wanted]


def due_filter(now: datetime) -> Q:
    """Tasks whose next attempt is due and that no sweep or worker holds."""
    return (
        Q(state__in=DISPATCHABLE, next_attempt_at__lte=now)
        & (Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        & (Q(running_until__isnull=True) | Q(running_until__lte=now))
    )


def request_reference_of(task: MixpanelTask) -> str:
    """The request an event about this task belongs to, when it serves exactly one (a retrieval)."""
    refs = list(DataSubjectRequest.objects.filter(tasks=task).values_list("reference", flat=True)[:2])
    return refs[0] if len(refs) == 1 else ""


def project_folder(project: MixpanelProject) -> str:
    return slugify(project.name) or f"project-{project.pk}"


def compliance_type_of(request: DataSubjectRequest) -> str:
    return request.regulation.upper()
