"""Message priorities with a real `celery worker` on Redis: a Mixpanel step overtakes a planning backlog.

A bulk approval queues one plan_request per request; the dispatch sweep and the steps it sends must not wait
behind them (settings.CELERY_TASK_ROUTES). The harness (conftest.py) gives the worker a Redis of its own.
"""

from __future__ import annotations

import pytest

from gdpr_requests import pipeline as pipeline_services
from gdpr_requests.models import MixpanelTask, TaskState
from gdpr_requests.pipeline import tasks
from gdpr_requests.requests import states
from tests.integration.conftest import wait_until
from tests.integration.fake_mixpanel import CREATE_RETRIEVAL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

BACKLOG = 1000
# kombu's Redis lists for the default queue, one per priority step (priority_steps [0, 3, 6, 9], sep "\x06\x16").
QUEUE_LISTS = ("celery", "celery\x06\x163", "celery\x06\x166", "celery\x06\x169")


@pytest.fixture
def staff(staff_user):
    from gdpr_requests.audit.chain import Actor

    return Actor.staff(staff_user)


def test_a_worker_sends_the_first_mixpanel_call_before_working_off_a_planning_backlog(pipeline, staff):
    import redis

    project = pipeline.make_project(name="Priorities", batch_size=10)
    [request] = pipeline.approved_requests(actor=staff, project=project, kind="access", count=1, prefix="prio")
    pipeline_services.plan_approved()  # planned here, so its retrieval is due when the worker starts
    assert MixpanelTask.objects.get().state == TaskState.PENDING_SUBMIT
    # The backlog a bulk approval leaves (ids no request has: each message is a quick no-op), then the sweep.
    for n in range(BACKLOG):
        tasks.plan_request.delay(10_000_000 + n)
    tasks.dispatch_due_tasks.delay()
    broker = redis.Redis.from_url(pipeline.env["CELERY_BROKER_URL"])

    def queued() -> int:
        return sum(broker.llen(name) for name in QUEUE_LISTS)

    assert queued() == BACKLOG + 2  # and the approval's own plan_request

    pipeline.start_workers(1, beat=False)
    wait_until(lambda: pipeline.fake.calls_for(operation=CREATE_RETRIEVAL), timeout=45, what="the retrieval's create")

    # Sweep, then step, then the backlog: first come, first served, the create would follow all of it.
    left = queued()
    print(f"messages still queued at the first create: {left} of {BACKLOG + 2}")
    assert left >= BACKLOG // 2
    pipeline.start_beat()  # polls further apart than a sweep interval are handed out by the sweep
    [done] = pipeline.wait_for_requests([request], timeout=90)
    assert done.status == states.COMPLETED
