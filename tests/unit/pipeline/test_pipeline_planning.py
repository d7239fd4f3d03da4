"""Planning: approved requests become MixpanelTask rows, coalesced into as few deletions as the batch size allows."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.models import AuditEvent, MixpanelProject, MixpanelTask, TaskRequestLink, TaskState
from gdpr_requests.requests import services, states
from tests.unit.pipeline.pipeline_support import START, approve, clock, eager_celery, pipeline_settings  # noqa: F401  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings", "clock")]


@pytest.fixture
def second_project(db):
    return MixpanelProject.objects.create(
        name="Web shop",
        mixpanel_project_id="777",
        project_token="shoptoken",
        oauth_token="shop-oauth",
        token_expires_on=date(2027, 1, 1),
        base_url_override="http://127.0.0.1:9/api/app",
    )


@pytest.mark.parametrize(("requests_made", "ids_each", "batch"), [(7, 2, 5), (10, 1, 3), (4, 3, 4), (1, 1, 1999)])
def test_deletions_are_coalesced_into_the_fewest_tasks_for_the_batch_size(
    make_request, staff_actor, project, requests_made, ids_each, batch
):
    project.deletion_batch_size = batch
    project.save()
    made = [
        approve(make_request, staff_actor, distinct_ids=[f"u{n}-{k}" for k in range(ids_each)])
        for n in range(requests_made)
    ]
    assert pipeline.plan_approved() == requests_made
    tasks = list(MixpanelTask.objects.order_by("pk"))
    total_ids = requests_made * ids_each
    assert len(tasks) == math.ceil(total_ids / batch)
    assert all(len(t.distinct_ids) <= batch for t in tasks)
    assert sorted(i for t in tasks for i in t.distinct_ids) == sorted(
        f"u{n}-{k}" for n in range(requests_made) for k in range(ids_each)
    )
    for dsr in made:
        dsr.refresh_from_db()
        assert dsr.status == states.PROCESSING
        linked_ids = {i for t in dsr.tasks.all() for i in t.distinct_ids}
        assert set(dsr.distinct_ids) <= linked_ids


def test_a_full_task_is_due_at_once_and_a_partial_one_waits_for_more_approvals(make_request, staff_actor, project):
    project.deletion_batch_size = 2
    project.save()
    for n in range(3):
        approve(make_request, staff_actor, distinct_ids=[f"id-{n}"])
    pipeline.plan_approved()
    full, partial = MixpanelTask.objects.order_by("pk")
    assert len(full.distinct_ids) == 2 and full.next_attempt_at == START
    assert len(partial.distinct_ids) == 1 and partial.next_attempt_at == START + timedelta(seconds=30)


def test_approvals_still_coming_in_keep_an_open_task_waiting_but_only_so_long(
    make_request, staff_actor, project, clock
):
    approve(make_request, staff_actor, distinct_ids=["first"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    assert task.next_attempt_at == START + timedelta(seconds=30)
    clock.move_to(START + timedelta(seconds=20))
    approve(make_request, staff_actor, distinct_ids=["second"])
    pipeline.plan_approved()
    task.refresh_from_db()
    assert task.next_attempt_at == START + timedelta(seconds=50)  # a quiet window after the latest approval
    clock.move_to(START + timedelta(seconds=595))
    MixpanelTask.objects.filter(pk=task.pk).update(next_attempt_at=START + timedelta(seconds=599))
    approve(make_request, staff_actor, distinct_ids=["late"])
    pipeline.plan_approved()
    task.refresh_from_db()
    assert task.next_attempt_at == START + timedelta(seconds=600)  # never past 20 windows after its creation
    assert MixpanelTask.objects.count() == 1


def test_later_approvals_fill_the_open_task_instead_of_making_a_new_one(make_request, staff_actor, project):
    first = approve(make_request, staff_actor, distinct_ids=["a"])
    assert pipeline.request_plan(request_id=first.pk) == 1
    second = approve(make_request, staff_actor, distinct_ids=["b", "c"])
    assert pipeline.request_plan(request_id=second.pk) == 1
    task = MixpanelTask.objects.get()
    assert task.distinct_ids == ["a", "b", "c"]
    assert set(task.requests.values_list("pk", flat=True)) == {first.pk, second.pk}


def test_a_task_that_was_already_sent_is_never_filled(make_request, staff_actor, project):
    first = approve(make_request, staff_actor, distinct_ids=["a"])
    pipeline.request_plan(request_id=first.pk)
    MixpanelTask.objects.update(attempts=1)  # a create went out (its answer may be lost)
    second = approve(make_request, staff_actor, distinct_ids=["b"])
    pipeline.request_plan(request_id=second.pk)
    assert [t.distinct_ids for t in MixpanelTask.objects.order_by("pk")] == [["a"], ["b"]]


def test_gdpr_and_ccpa_deletions_are_not_mixed(make_request, staff_actor, project):
    approve(make_request, staff_actor, distinct_ids=["a"], regulation="gdpr")
    approve(make_request, staff_actor, distinct_ids=["b"], regulation="ccpa")
    pipeline.plan_approved()
    assert sorted((t.compliance_type, tuple(t.distinct_ids)) for t in MixpanelTask.objects.all()) == [
        ("CCPA", ("b",)),
        ("GDPR", ("a",)),
    ]


def test_the_same_id_in_two_requests_is_sent_once_and_serves_both(make_request, staff_actor, project):
    one = approve(make_request, staff_actor, distinct_ids=["same", "x"])
    two = approve(make_request, staff_actor, distinct_ids=["same"])
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    assert task.distinct_ids == ["same", "x"]
    assert TaskRequestLink.objects.filter(task=task).count() == 2
    assert statuses_of(one, two) == [states.PROCESSING, states.PROCESSING]


def test_a_request_spanning_two_projects_gets_a_task_in_each(make_request, staff_actor, project, second_project):
    dsr = approve(make_request, staff_actor, distinct_ids=["a"], projects=[project, second_project])
    assert pipeline.request_plan(request_id=dsr.pk) == 2
    assert sorted(MixpanelTask.objects.values_list("project__name", flat=True)) == ["Main app", "Web shop"]
    event = AuditEvent.objects.filter(request_reference=dsr.reference, action="request.start_processing").get()
    assert event.payload["task_count"] == 2


def test_a_retrieval_serves_one_request_with_the_disclosure_type_of_a_ccpa_request(make_request, staff_actor, project):
    gdpr = approve(make_request, staff_actor, kind="access", distinct_ids=["a"])
    ccpa = approve(
        make_request, staff_actor, kind="access", regulation="ccpa", disclosure_type="Categories", distinct_ids=["b"]
    )
    pipeline.plan_approved()
    by_request = {t.requests.get().pk: t for t in MixpanelTask.objects.all()}
    assert by_request[gdpr.pk].kind == "retrieval" and by_request[gdpr.pk].compliance_type == "GDPR"
    assert by_request[gdpr.pk].disclosure_type == ""
    assert by_request[ccpa.pk].compliance_type == "CCPA" and by_request[ccpa.pk].disclosure_type == "Categories"
    assert by_request[gdpr.pk].next_attempt_at == START  # nothing to wait for: retrievals are not coalesced


def test_planning_twice_changes_nothing(make_request, staff_actor, project):
    dsr = approve(make_request, staff_actor)
    assert pipeline.request_plan(request_id=dsr.pk) == 1
    assert pipeline.request_plan(request_id=dsr.pk) == 0
    assert pipeline.plan_approved() == 0
    assert MixpanelTask.objects.count() == 1


def test_a_request_with_no_active_project_fails_for_staff(make_request, staff_actor, project):
    dsr = approve(make_request, staff_actor)
    MixpanelProject.objects.update(is_active=False)
    pipeline.request_plan(request_id=dsr.pk)
    dsr.refresh_from_db()
    assert dsr.status == states.FAILED
    assert not MixpanelTask.objects.exists()


def test_approval_enqueues_planning_after_commit(
    make_request, staff_actor, project, django_capture_on_commit_callbacks, eager_celery
):
    dsr = make_request(verified_by_staff="seen", channel="staff")
    with django_capture_on_commit_callbacks(execute=True):
        services.request_approve(request=dsr, actor=staff_actor)
    dsr.refresh_from_db()
    assert dsr.status == states.PROCESSING  # the hook ran plan_request (eagerly here)
    assert MixpanelTask.objects.get().requests.get() == dsr


def test_retry_of_a_failed_request_replaces_only_its_failed_tasks(make_request, staff_actor, project):
    dsr = approve(make_request, staff_actor, distinct_ids=["a", "b"])
    project.deletion_batch_size = 1
    project.save()
    pipeline.request_plan(request_id=dsr.pk)
    good, bad = MixpanelTask.objects.order_by("pk")
    MixpanelTask.objects.filter(pk=good.pk).update(state=TaskState.SUCCEEDED, tracking_id="t-good")
    MixpanelTask.objects.filter(pk=bad.pk).update(state=TaskState.FAILED, tracking_id="t-bad", last_error="FAILURE")
    with_db = pipeline.settle_now
    from django.db import transaction

    with transaction.atomic():
        with_db([dsr.pk])
    dsr.refresh_from_db()
    assert dsr.status == states.FAILED

    pipeline.request_retry_tasks(request=dsr, actor=staff_actor)
    dsr.refresh_from_db()
    assert dsr.status == states.APPROVED
    bad.refresh_from_db()
    assert bad.state == TaskState.SUPERSEDED
    assert pipeline.request_plan(request_id=dsr.pk) == 2  # the succeeded one and a new one for "b"
    new = MixpanelTask.objects.exclude(pk__in=[good.pk, bad.pk]).get()
    assert new.distinct_ids == ["b"] and new.state == TaskState.PENDING_SUBMIT
    assert AuditEvent.objects.filter(request_reference=dsr.reference, action="request.tasks_reset").exists()


def test_a_plain_staff_retry_also_replans_the_failed_part(make_request, staff_actor, project):
    dsr = approve(make_request, staff_actor, distinct_ids=["a"])
    pipeline.request_plan(request_id=dsr.pk)
    MixpanelTask.objects.update(state=TaskState.NEEDS_ATTENTION, tracking_id="t-lost")
    services.request_fail(request=dsr, why="lost")
    services.request_retry(request=dsr, actor=staff_actor)
    assert pipeline.request_plan(request_id=dsr.pk) == 1
    assert sorted(MixpanelTask.objects.values_list("state", flat=True)) == [
        TaskState.PENDING_SUBMIT,
        TaskState.SUPERSEDED,
    ]
    dsr.refresh_from_db()
    assert dsr.status == states.PROCESSING


def test_planning_writes_audit_events_without_personal_data(make_request, staff_actor, project):
    approve(make_request, staff_actor, distinct_ids=["secret-id-1"])
    pipeline.plan_approved()
    planned = AuditEvent.objects.get(action="task.planned")
    assert planned.payload["id_count"] == 1
    assert "secret-id-1" not in str(list(AuditEvent.objects.values_list("payload", flat=True)))
    assert timezone.now() == START


def statuses_of(*requests):
    for r in requests:
        r.refresh_from_db()
    return [r.status for r in requests]


def test_a_planning_message_for_many_requests_plans_the_approved_ones_and_skips_the_rest(
    make_request, staff_actor, project, monkeypatch
):
    """plan_requests (a bulk approval's message): the approved requests are planned, coalesced as the sweep
    would, in chunks of PLAN_CHUNK; a request withdrawn meanwhile is skipped; a second delivery plans nothing."""
    from gdpr_requests.pipeline import planning

    monkeypatch.setattr(planning, "PLAN_CHUNK", 2)
    project.deletion_batch_size = 10
    project.save()
    made = [approve(make_request, staff_actor, distinct_ids=[f"m{n}"]) for n in range(5)]
    services.request_cancel(request=made[4], reason="changed their mind", actor=staff_actor)
    ids = [dsr.pk for dsr in made]
    assert pipeline.request_plan_many(request_ids=ids + ids[:1]) == 4
    assert pipeline.request_plan_many(request_ids=ids) == 0
    task = MixpanelTask.objects.get()
    assert sorted(task.distinct_ids) == ["m0", "m1", "m2", "m3"]
    statuses = dict(services.DataSubjectRequest.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == [states.PROCESSING] * 4 + [states.CANCELLED]
