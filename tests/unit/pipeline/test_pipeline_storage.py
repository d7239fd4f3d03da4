"""A retrieval result that cannot be stored (EXPORTS_DIR unwritable): a transient failure with a clear message,
one staff email, a retry with backoff, and the request completes once the folder is fixed."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import logging

import pytest
from django.core import mail
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.models import AuditEvent, MixpanelTask, SubjectExport, TaskState
from gdpr_requests.requests import exports, states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
    approve,
    clock,
    drive,
    mixpanel,
    pipeline_settings,
    statuses,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]


def unwritable_by_a_file_in_the_path(settings, tmp_path, monkeypatch) -> None:
    # Tests run as root, which chmod does not stop: a regular file where a folder should be stops everyone.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.EXPORTS_DIR = blocker / "exports"


def unwritable_by_permission(settings, tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(exports, "export_store", refuse)


@pytest.mark.parametrize("make_unwritable", [unwritable_by_permission, unwritable_by_a_file_in_the_path])
def test_an_unwritable_exports_folder_is_a_transient_failure_that_alerts_staff_once_and_retries(
    clock,
    mixpanel,
    make_request,
    staff_actor,
    project,
    settings,
    tmp_path,
    monkeypatch,
    caplog,
    django_capture_on_commit_callbacks,
    make_unwritable,
):
    good_dir = settings.EXPORTS_DIR
    make_unwritable(settings, tmp_path, monkeypatch)
    dsr = approve(make_request, staff_actor, kind="access", distinct_ids=["stored-subject"])
    caplog.set_level(logging.DEBUG)
    with django_capture_on_commit_callbacks(execute=True):
        drive(clock, until=lambda: MixpanelTask.objects.filter(attempts__gte=2, state=TaskState.DOWNLOADING).exists())
        task = MixpanelTask.objects.get()
        task.refresh_from_db()
        first_retry_at = task.next_attempt_at
        # Two failed stores: the task waits in DOWNLOADING with a clear error and a growing backoff.
        assert task.state == TaskState.DOWNLOADING
        assert "could not be written to the exports folder (EXPORTS_DIR)" in task.last_error
        assert task.running_until is None  # released at once, not held until the lease runs out
        assert first_retry_at > timezone.now()
        pipeline.task_step(task_id=task.pk)  # not due yet: nothing happens
    assert not [r for r in caplog.records if r.exc_info]  # a warning, no traceback
    assert AuditEvent.objects.filter(action="task.store_failed").count() >= 1
    alerts = [m for m in mail.outbox if "cannot be stored" in m.subject]
    assert len(alerts) == 1 and f"#{task.pk}" in alerts[0].body
    assert statuses(dsr) == [states.PROCESSING]

    monkeypatch.undo()
    settings.EXPORTS_DIR = good_dir
    drive(clock)
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED and task.last_error == ""
    assert SubjectExport.objects.filter(request=dsr).exists()
    assert statuses(dsr) == [states.COMPLETED]
