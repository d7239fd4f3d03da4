"""Retention: closed requests forget the requester's personal data after DSR_RETENTION_DAYS."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from gdpr_requests.audit.chain import verify_database
from gdpr_requests.models import AuditEvent, DataSubjectRequest, MixpanelTask, TaskState
from gdpr_requests.requests import retention, services, states
from gdpr_requests.requests.exports import export_store

pytestmark = pytest.mark.django_db

EMAIL = "retained.person@example.org"


@pytest.fixture
def purge(django_capture_on_commit_callbacks):
    """retention.purge_due, with the on-commit work (unlinking export files) run as a commit would."""

    def run(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return retention.purge_due(**kwargs)

    return run


def after_retention(days: int = 1):
    return time_machine.travel(timezone.now() + timedelta(days=settings.DSR_RETENTION_DAYS + days), tick=True)


@pytest.fixture
def rejected(make_request, staff_actor):
    dsr = make_request(email=EMAIL, name="Retained Person", distinct_ids=["ret-1", "ret-2"], message="my note")
    return services.request_reject(request=dsr, reason="not a customer", actor=staff_actor)


@pytest.fixture
def completed_access(make_request, staff_actor, project):
    """A completed access request with a stored export and a finished retrieval task."""
    dsr = make_request(kind="access", email="access.person@example.org", name="Access Person", distinct_ids=["acc-1"])
    services.request_confirm_email(request=dsr)
    services.request_approve(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    task = MixpanelTask.objects.create(
        project=project, kind="retrieval", compliance_type="GDPR", distinct_ids=["acc-1"], state=TaskState.SUCCEEDED
    )
    task.requests.add(dsr)
    export = export_store(request=dsr, content=b"PK fake zip", task=task)
    services.request_complete(request=dsr)
    return dsr, export, task


def test_nothing_is_purged_before_the_retention_period_ends(rejected, purge):
    with time_machine.travel(timezone.now() + timedelta(days=settings.DSR_RETENTION_DAYS - 1), tick=True):
        assert purge() == []
    rejected.refresh_from_db()
    assert rejected.requester_email == EMAIL
    assert rejected.purged_at is None


def test_purge_replaces_personal_data_and_keeps_the_hash_and_the_trail(rejected, make_request, purge):
    still_open = make_request(email="open.person@example.org")
    email_hash = rejected.email_hash
    events_before = list(AuditEvent.objects.filter(request_reference=rejected.reference).values_list("hash", flat=True))

    with after_retention():
        assert purge() == [rejected.reference]

    rejected.refresh_from_db()
    assert rejected.requester_email == retention.PURGED_EMAIL
    assert rejected.requester_name == retention.PURGED_NAME
    assert rejected.message == retention.PURGED_MESSAGE
    assert rejected.distinct_ids == []
    assert rejected.purged_at is not None
    assert rejected.email_hash == email_hash
    assert rejected.status == states.REJECTED
    # The earlier events are untouched; one more records the purge, without personal data.
    trail = list(AuditEvent.objects.filter(request_reference=rejected.reference).order_by("sequence"))
    assert [e.hash for e in trail[:-1]] == events_before
    purge_event = trail[-1]
    assert purge_event.action == "request.purged"
    assert purge_event.payload["distinct_id_count"] == 2
    assert purge_event.payload["retention_days"] == settings.DSR_RETENTION_DAYS
    flat = str(purge_event.payload) + purge_event.actor_label
    for personal in (EMAIL, "Retained Person", "ret-1", "my note"):
        assert personal not in flat
    assert verify_database().ok
    # An open request is never purged, however old.
    still_open.refresh_from_db()
    assert still_open.requester_email == "open.person@example.org"


def test_purge_deletes_the_stored_export_file(completed_access, purge):
    dsr, export, _task = completed_access
    path = Path(settings.EXPORTS_DIR) / export.file_path
    assert path.exists()

    with after_retention():
        assert purge() == [dsr.reference]

    assert not path.exists()
    export.refresh_from_db()
    assert export.deleted_at is not None
    deleted = AuditEvent.objects.get(request_reference=dsr.reference, action="export.deleted")
    assert deleted.payload["why"] == "retention"
    purge_event = AuditEvent.objects.get(request_reference=dsr.reference, action="request.purged")
    assert purge_event.payload["export_deleted"] is True


def test_purge_clears_distinct_ids_from_finished_tasks_that_served_only_purged_requests(
    completed_access, make_request, staff_actor, project, purge
):
    dsr, _export, own_task = completed_access
    # A coalesced deletion serves this request and one closed much later: its ids wait for both.
    later = make_request(email="later@example.org", distinct_ids=["late-1"])
    shared = MixpanelTask.objects.create(
        project=project,
        kind="deletion",
        compliance_type="GDPR",
        distinct_ids=["acc-1", "late-1"],
        state=TaskState.SUCCEEDED,
    )
    shared.requests.add(dsr, later)

    with after_retention():
        purge()
    own_task.refresh_from_db()
    shared.refresh_from_db()
    assert own_task.distinct_ids == []
    assert shared.distinct_ids == ["acc-1", "late-1"]

    services.request_reject(request=later, reason="closed later", actor=staff_actor)
    with after_retention(days=2 * settings.DSR_RETENTION_DAYS):
        assert purge() == [later.reference]
    shared.refresh_from_db()
    assert shared.distinct_ids == []


def test_dry_run_lists_what_would_go_and_changes_nothing(rejected, completed_access, purge):
    dsr, export, _task = completed_access
    events = AuditEvent.objects.count()
    with after_retention():
        listed = purge(dry_run=True)
    assert sorted(listed) == sorted([rejected.reference, dsr.reference])
    assert AuditEvent.objects.count() == events
    assert not DataSubjectRequest.objects.filter(purged_at__isnull=False).exists()
    assert DataSubjectRequest.objects.get(pk=rejected.pk).requester_email == EMAIL
    assert (Path(settings.EXPORTS_DIR) / export.file_path).exists()
    export.refresh_from_db()
    assert export.deleted_at is None


def test_purging_again_does_nothing(rejected, purge):
    with after_retention():
        assert purge() == [rejected.reference]
        events = AuditEvent.objects.count()
        assert purge() == []
        assert retention.request_purge(request_id=rejected.pk) is None
    assert AuditEvent.objects.count() == events


def test_purge_logs_the_reference_and_never_the_personal_data(rejected, caplog, purge):
    caplog.set_level(logging.DEBUG)
    with after_retention():
        purge()
    from gdpr_requests.ops.logging import JsonFormatter

    lines = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert f'"reference": "{rejected.reference}"' in lines
    assert '"outcome": "purged"' in lines
    assert EMAIL not in lines
    assert "Retained Person" not in lines


def test_the_beat_task_runs_the_purge(rejected):
    from gdpr_requests.requests import tasks

    with after_retention():
        tasks.purge_retained_personal_data()
    rejected.refresh_from_db()
    assert rejected.purged_at is not None
    assert AuditEvent.objects.filter(request_reference=rejected.reference, action="request.purged").count() == 1
