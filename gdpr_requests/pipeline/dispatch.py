"""Dispatch: the beat sweep that hands due tasks to workers.

It claims each due task with a conditional UPDATE of ``claimed_until`` (a lease) and enqueues
run_mixpanel_task after commit. A message the broker loses is harmless: once the lease passes, the next sweep
finds the row again. Projects whose credential is failing are skipped (their tasks are PAUSED anyway).

Per project it claims only as many tasks as the rate limiter can serve until the next sweep, staggered by the
limiter's interval (Celery countdown), so workers do not queue up behind one project's slot while its other
due tasks would be better left for the next sweep. A deletion batch that approved requests still waiting to be
planned would join is left open (planning.batches_awaiting_planning).

The sweep and the steps it sends outrank planning in the queue (settings.CELERY_TASK_ROUTES), so a bulk
approval's planning messages do not hold back the Mixpanel calls of work already planned.
"""

from __future__ import annotations

import math
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr_requests.models import CredentialStatus, MixpanelTask
from gdpr_requests.pipeline.enqueue import enqueue_step
from gdpr_requests.pipeline.planning import batches_awaiting_planning
from gdpr_requests.pipeline.queries import due_filter
from gdpr_requests.pipeline.timing import dispatch_lease_seconds

# However fast the limiter, one sweep never hands out more than this per project.
MAX_PER_PROJECT = 100


def per_project_budget() -> int:
    interval = float(settings.MIXPANEL_MIN_INTERVAL_SECONDS)
    if interval <= 0:
        return MAX_PER_PROJECT
    return max(1, min(MAX_PER_PROJECT, math.ceil(float(settings.GDPR_DISPATCH_INTERVAL_SECONDS) / interval)))


def dispatch_due() -> int:
    """Claim due tasks and enqueue a step for each after commit. Returns how many were claimed."""
    now = timezone.now()
    interval = max(0.0, float(settings.MIXPANEL_MIN_INTERVAL_SECONDS))
    budget = per_project_budget()
    lease_seconds = dispatch_lease_seconds()
    due = MixpanelTask.objects.filter(due_filter(now)).exclude(project__credential_status=CredentialStatus.FAILING)
    project_ids = sorted(set(due.order_by().values_list("project_id", flat=True)))
    claimed: list[tuple[int, float]] = []
    with transaction.atomic():
        for project_id in project_ids:
            held = batches_awaiting_planning(project_id=project_id, now=now)
            candidates = list(
                due.filter(project_id=project_id)
                .exclude(pk__in=held)
                .order_by("next_attempt_at", "pk")
                .values_list("pk", flat=True)[:budget]
            )
            slot = 0
            for task_id in candidates:
                countdown = slot * interval
                lease = now + timedelta(seconds=countdown + lease_seconds)
                # Conditional: a task another sweep or a worker took meanwhile is left alone.
                if MixpanelTask.objects.filter(due_filter(now), pk=task_id).update(claimed_until=lease):
                    claimed.append((task_id, countdown))
                    slot += 1
        for task_id, countdown in claimed:
            transaction.on_commit(partial(enqueue_step, task_id, countdown))
    return len(claimed)
