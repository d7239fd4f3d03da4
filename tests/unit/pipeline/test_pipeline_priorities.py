"""Message priorities: the dispatch sweep and Mixpanel steps overtake bulk planning in the one Celery queue.

The policy is CELERY_TASK_ROUTES in compliance/settings.py. These tests publish through the app's own producer
(so the routes apply as they do in production) to a real broker and read the order back with kombu's consumer,
which pops a Redis queue's priority lists the way a worker does (one BRPOP naming them in priority order).
Each Redis test uses a queue of its own, so it needs no database of its own and flushes nothing.
"""

from __future__ import annotations

import uuid
from bisect import bisect
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Consumer
from kombu.transport.redis import PRIORITY_STEPS

from compliance.celery import app
from gdpr_requests.notifications import tasks as notification_tasks
from gdpr_requests.pipeline import tasks

DISPATCH = "gdpr_requests.tasks.dispatch_due_tasks"
STEP = "gdpr_requests.tasks.run_mixpanel_task"
PLAN = "gdpr_requests.tasks.plan_request"
PLAN_SWEEP = "gdpr_requests.tasks.plan_approved_requests"
EMAIL = "gdpr_requests.tasks.notify_subject"


def priority_of(task_name: str) -> int | None:
    return app.amqp.router.route({}, task_name).get("priority")


def redis_step(priority: int) -> int:
    """The Redis list (kombu priority step) a message of this priority lands in, with kombu's default steps."""
    return PRIORITY_STEPS[bisect(PRIORITY_STEPS, priority) - 1]


def received(connection: Connection, queue_name: str, count: int) -> list[tuple[str, int | None]]:
    """Take ``count`` messages from the queue one at a time, acknowledging each, as a worker with
    ``worker_prefetch_multiplier = 1`` does; return (task name, priority) for each, in order."""
    got: list[tuple[str, int | None]] = []

    def on_message(body: object, message) -> None:
        got.append((message.headers["task"], message.properties.get("priority")))
        message.ack()

    queue = app.amqp.queues[queue_name]
    with Consumer(connection, queues=[queue], callbacks=[on_message], accept=["json"], prefetch_count=1):
        while len(got) < count:
            connection.drain_events(timeout=5)
    return got


def publish_backlog_then_urgent(connection: Connection, queue_name: str, backlog: int) -> None:
    """What a bulk approval followed by the beat's sweep puts in the queue: planning first, then the rest."""
    for n in range(backlog):
        tasks.plan_request.apply_async((10_000_000 + n,), queue=queue_name, connection=connection)
    tasks.plan_approved_requests.apply_async(queue=queue_name, connection=connection)
    notification_tasks.notify_subject.apply_async((1, "completed"), queue=queue_name, connection=connection)
    tasks.dispatch_due_tasks.apply_async(queue=queue_name, connection=connection)
    tasks.run_mixpanel_task.apply_async((42,), queue=queue_name, connection=connection)


# --- the policy -----------------------------------------------------------------------------------------


def test_dispatch_and_steps_outrank_everything_and_planning_comes_last():
    assert priority_of(DISPATCH) == priority_of(STEP) == 0  # on Redis, 0 is served first
    assert priority_of(PLAN) == priority_of(PLAN_SWEEP) == 9
    assert priority_of(EMAIL) == 3


def test_every_task_has_a_priority_so_none_silently_joins_the_most_urgent_list():
    # A message without one gets kombu's default priority 0: it would queue among the steps.
    ours = sorted(name for name in app.tasks if name.startswith("gdpr_requests."))
    assert ours
    assert {name: priority_of(name) for name in ours if priority_of(name) is None} == {}


def test_the_three_levels_land_in_three_different_redis_lists():
    # kombu folds priorities 0-9 into its priority_steps (default [0, 3, 6, 9]); two levels folded into one
    # list would be served first come, first served again.
    levels = {priority_of(DISPATCH), priority_of(EMAIL), priority_of(PLAN)}
    assert len({redis_step(level) for level in levels}) == 3


def test_no_default_priority_overrides_the_routes():
    # Task.apply_async sends task_default_priority as an explicit option, which wins over task_routes.
    assert app.conf.task_default_priority is None
    assert tasks.run_mixpanel_task.priority is None


# --- Redis: the order a worker sees ---------------------------------------------------------------------


@pytest.fixture
def redis_queue(require_redis) -> Iterator[tuple[Connection, str]]:
    name = f"test-priorities-{uuid.uuid4().hex[:12]}"
    with Connection(require_redis) as connection:
        try:
            yield connection, name
        finally:
            connection.default_channel.queue_delete(name)  # every priority list and the binding


def test_on_redis_a_step_sent_after_many_planning_messages_is_taken_first(redis_queue):
    connection, name = redis_queue
    publish_backlog_then_urgent(connection, name, backlog=300)

    order = received(connection, name, 4)

    assert [task for task, _ in order] == [DISPATCH, STEP, EMAIL, PLAN]
    assert [priority for _, priority in order] == [0, 0, 3, 9]


def test_on_redis_planning_waits_in_its_own_list_first_come_first_served(redis_queue):
    connection, name = redis_queue
    publish_backlog_then_urgent(connection, name, backlog=5)
    channel = connection.default_channel
    lists = {step: name if step == 0 else f"{name}{channel.sep}{step}" for step in PRIORITY_STEPS}
    client = channel.client
    assert {step: client.llen(key) for step, key in lists.items()} == {0: 2, 3: 1, 6: 0, 9: 6}

    order = received(connection, name, 9)

    # The urgent ones first, then the rest in the order sent: the planning sweep after the per-approval plans.
    assert [task for task, _ in order] == [DISPATCH, STEP, EMAIL, *[PLAN] * 5, PLAN_SWEEP]
    assert sum(client.llen(key) for key in lists.values()) == 0


# --- the filesystem broker (the embedded default) --------------------------------------------------------


@pytest.fixture
def filesystem_connection(tmp_path: Path) -> Iterator[Connection]:
    """A connection with the options compliance/settings.py gives the embedded default's broker."""
    folders = {name: tmp_path / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir()
    options = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }
    with Connection("filesystem://", transport_options=options) as connection:
        yield connection


def test_the_filesystem_broker_delivers_every_message_with_its_priority(filesystem_connection):
    # It has no priority lists (it takes files in name order: the time sent to the millisecond, then a random
    # uuid), so the embedded default stays first come, first served; nothing is lost or refused.
    publish_backlog_then_urgent(filesystem_connection, "celery", backlog=3)

    order = received(filesystem_connection, "celery", 7)

    assert sorted(order) == sorted(
        [(PLAN, 9), (PLAN, 9), (PLAN, 9), (PLAN_SWEEP, 9), (EMAIL, 3), (DISPATCH, 0), (STEP, 0)]
    )
