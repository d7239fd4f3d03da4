"""The dispatch sweep: claims with a lease, enqueues after commit, skips what must not run."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.models import CredentialStatus, MixpanelProject, MixpanelTask, TaskState
from tests.unit.pipeline.pipeline_support import START, approve, clock, eager_celery, mixpanel, pipeline_settings  # noqa: F401  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings", "clock")]


def planned_retrievals(make_request, staff_actor, count: int) -> list[MixpanelTask]:
    for n in range(count):
        approve(make_request, staff_actor, kind="access", distinct_ids=[f"r{n}"])
    pipeline.plan_approved()
    return list(MixpanelTask.objects.order_by("pk"))


def test_due_tasks_are_claimed_and_enqueued_only_after_commit(
    make_request, staff_actor, project, django_capture_on_commit_callbacks, settings
):
    planned_retrievals(make_request, staff_actor, 2)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert pipeline.dispatch_due() == 2
    assert len(callbacks) == 2
    leases = sorted(MixpanelTask.objects.values_list("claimed_until", flat=True))
    # Staggered by the rate limiter's interval, so the second waits for its slot in the queue, not in a worker.
    lease = settings.GDPR_DISPATCH_LEASE_SECONDS
    assert leases == [START + timedelta(seconds=lease), START + timedelta(seconds=1 + lease)]


def test_a_claimed_task_is_not_claimed_again_until_its_lease_runs_out(
    make_request, staff_actor, project, clock, settings
):
    planned_retrievals(make_request, staff_actor, 1)
    assert pipeline.dispatch_due() == 1
    assert pipeline.dispatch_due() == 0  # the message is on its way
    clock.move_to(START + timedelta(seconds=settings.GDPR_DISPATCH_LEASE_SECONDS + 1))
    assert pipeline.dispatch_due() == 1  # the broker lost it: found again


def test_the_claim_lasts_as_long_as_the_dispatch_lease_setting_says(
    make_request, staff_actor, project, clock, settings
):
    settings.GDPR_DISPATCH_LEASE_SECONDS = 7.0  # read at each sweep, not at import
    planned_retrievals(make_request, staff_actor, 1)
    assert pipeline.dispatch_due() == 1
    assert MixpanelTask.objects.get().claimed_until == START + timedelta(seconds=7)
    clock.move_to(START + timedelta(seconds=6.9))
    assert pipeline.dispatch_due() == 0
    clock.move_to(START + timedelta(seconds=7))
    assert pipeline.dispatch_due() == 1  # well before the default 60 s


def test_paused_tasks_and_projects_with_a_failing_credential_are_skipped(make_request, staff_actor, project):
    other = MixpanelProject.objects.create(
        name="Other",
        mixpanel_project_id="9",
        project_token="t9",
        oauth_token="o9",
        token_expires_on=project.token_expires_on,
        base_url_override=project.base_url_override,
    )
    approve(make_request, staff_actor, kind="access", projects=[project])
    approve(make_request, staff_actor, kind="access", projects=[other])
    approve(make_request, staff_actor, kind="access", distinct_ids=["p"], projects=[project])
    pipeline.plan_approved()
    MixpanelProject.objects.filter(pk=other.pk).update(credential_status=CredentialStatus.FAILING)
    MixpanelTask.objects.filter(distinct_ids=["p"]).update(state=TaskState.PAUSED)
    assert pipeline.dispatch_due() == 1
    claimed = MixpanelTask.objects.get(claimed_until__isnull=False)
    assert claimed.project == project and claimed.state == TaskState.PENDING_SUBMIT


def test_a_sweep_hands_out_no_more_per_project_than_the_limiter_can_serve_before_the_next(
    make_request, staff_actor, project, settings
):
    settings.GDPR_DISPATCH_INTERVAL_SECONDS = 3.0
    planned_retrievals(make_request, staff_actor, 5)
    assert pipeline.dispatch_due() == 3
    assert MixpanelTask.objects.filter(claimed_until__isnull=True).count() == 2


def test_tasks_not_due_yet_and_tasks_held_by_a_worker_are_left_alone(make_request, staff_actor, project):
    first, second = planned_retrievals(make_request, staff_actor, 2)
    MixpanelTask.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    MixpanelTask.objects.filter(pk=second.pk).update(running_until=timezone.now() + timedelta(minutes=5))
    assert pipeline.dispatch_due() == 0


def test_the_enqueued_message_runs_the_step(
    make_request, staff_actor, project, mixpanel, django_capture_on_commit_callbacks, eager_celery
):
    planned_retrievals(make_request, staff_actor, 1)
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.dispatch_due()
    task = MixpanelTask.objects.get()
    assert task.state == TaskState.SUBMITTED and task.claimed_until is None
    assert len(mixpanel.of("create_retrieval")) == 1


def test_the_celery_tasks_are_thin_wrappers_that_take_ids(make_request, staff_actor, project, mixpanel, eager_celery):
    from gdpr_requests.pipeline import tasks

    dsr = approve(make_request, staff_actor, kind="access")
    tasks.plan_request.delay(dsr.pk)
    task = MixpanelTask.objects.get()
    tasks.run_mixpanel_task.delay(task.pk)
    task.refresh_from_db()
    assert task.state == TaskState.SUBMITTED
    tasks.dispatch_due_tasks.delay()
    tasks.plan_approved_requests.delay()


# --- a part-full deletion batch and a planning backlog --------------------------------------------------------
# Planning goes at the lowest message priority, so during a bulk approval it pauses while workers settle a
# finished batch; a part-full batch whose quiet window passed meanwhile waits for the requests still to plan.


def open_batch_with_one_planned_deletion(make_request, staff_actor, project) -> MixpanelTask:
    project.deletion_batch_size = 10
    project.save()
    first = approve(make_request, staff_actor, distinct_ids=["a"])
    pipeline.request_plan(request_id=first.pk)
    return MixpanelTask.objects.get()


def test_a_part_full_batch_is_held_while_deletions_that_would_join_it_wait_to_be_planned(
    make_request, staff_actor, project, clock
):
    batch = open_batch_with_one_planned_deletion(make_request, staff_actor, project)
    waiting = approve(make_request, staff_actor, distinct_ids=["b"])  # its plan_request is still queued
    clock.move_to(START + timedelta(seconds=31))  # the batch's quiet window has passed
    assert pipeline.dispatch_due() == 0
    pipeline.request_plan(request_id=waiting.pk)
    batch.refresh_from_db()
    assert batch.distinct_ids == ["a", "b"]
    clock.move_to(batch.next_attempt_at)
    assert pipeline.dispatch_due() == 1


def test_the_hold_ends_where_the_coalescing_window_rule_ends(make_request, staff_actor, project, clock):
    open_batch_with_one_planned_deletion(make_request, staff_actor, project)
    approve(make_request, staff_actor, distinct_ids=["b"])  # planning is stuck: the batch must not wait forever
    clock.move_to(START + timedelta(seconds=20 * 30 - 1))
    assert pipeline.dispatch_due() == 0
    clock.move_to(START + timedelta(seconds=20 * 30))
    assert pipeline.dispatch_due() == 1


def test_requests_that_would_not_join_the_batch_do_not_hold_it(make_request, staff_actor, project, clock):
    open_batch_with_one_planned_deletion(make_request, staff_actor, project)
    approve(make_request, staff_actor, distinct_ids=["c"], regulation="ccpa")  # another compliance type
    approve(make_request, staff_actor, kind="access", distinct_ids=["d"])  # a retrieval
    clock.move_to(START + timedelta(seconds=31))
    assert pipeline.dispatch_due() == 1


def test_a_full_batch_is_never_held(make_request, staff_actor, project, clock):
    project.deletion_batch_size = 1
    project.save()
    first = approve(make_request, staff_actor, distinct_ids=["a"])
    pipeline.request_plan(request_id=first.pk)
    approve(make_request, staff_actor, distinct_ids=["b"])
    assert pipeline.dispatch_due() == 1
    assert MixpanelTask.objects.get().distinct_ids == ["a"]
