"""Access requests: retrieval, download at once, checks, storage, and refusal of malicious results."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import date

import pytest
import pyzipper

from gdpr_requests.audit.chain import verify_database
from gdpr_requests.models import ApiCall, AuditEvent, MixpanelProject, MixpanelTask, SubjectExport, TaskState
from gdpr_requests.requests import exports, readable_export, states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
    FILES,
    Reply,
    approve,
    clock,
    drive,
    make_zip,
    mixpanel,
    pipeline_settings,
    statuses,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]

EVENTS = b'[{"event": "Signed up", "properties": {"plan": "pro"}}]'


def stored_members(dsr) -> dict[str, bytes]:
    """Mixpanel's files in the stored export (the readable overview beside them: test_pipeline_readable_export)."""
    export = SubjectExport.objects.get(request=dsr)
    with exports.export_open(export) as handle, zipfile.ZipFile(handle) as archive:
        return {name: archive.read(name) for name in archive.namelist() if not readable_export.is_generated(name)}


def test_a_retrieval_is_downloaded_at_once_stored_and_the_request_completes(
    clock, mixpanel, make_request, staff_actor, project
):
    mixpanel.statuses["task-0001"] = ["PENDING", "STARTED", "SUCCESS"]
    mixpanel.result_body = make_zip({"events.json": EVENTS})
    dsr = approve(make_request, staff_actor, kind="access", distinct_ids=["subject-1"])
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert "available for download until" in dsr.closing_note
    assert stored_members(dsr) == {"main-app/events.json": EVENTS}
    task = MixpanelTask.objects.get()
    assert task.state == TaskState.SUCCEEDED and task.result_url == ""
    status_calls = mixpanel.of("retrieval_status")
    download = mixpanel.of("download")[0]
    assert (download.at - status_calls[-1].at).total_seconds() <= 1.0  # at once: the next free slot
    assert "Authorization" not in download.headers
    event = AuditEvent.objects.get(action="task.downloaded")
    assert event.payload["sha256"] == hashlib.sha256(mixpanel.result_body).hexdigest()
    assert event.request_reference == dsr.reference
    export = SubjectExport.objects.get(request=dsr)
    assert AuditEvent.objects.get(action="export.stored").payload["sha256"] == export.sha256
    assert list(ApiCall.objects.filter(operation="download").values_list("outcome", flat=True)) == ["ok"]
    assert FILES not in str(list(AuditEvent.objects.values_list("payload", flat=True)))
    assert verify_database().ok


def test_a_ccpa_retrieval_sends_its_disclosure_type(clock, mixpanel, make_request, staff_actor, project):
    dsr = approve(
        make_request, staff_actor, kind="access", regulation="ccpa", disclosure_type="Sources", distinct_ids=["s"]
    )
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert mixpanel.of("create_retrieval")[0].body == {
        "distinct_ids": ["s"],
        "compliance_type": "CCPA",
        "disclosure_type": "Sources",
    }


def test_an_aes_archive_is_opened_with_the_api_secret_and_stored_openable(
    clock, mixpanel, make_request, staff_actor, project
):
    project.api_secret = "the-api-secret"
    project.save()
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(b"the-api-secret")
        archive.writestr("events.json", EVENTS)
    mixpanel.result_body = buffer.getvalue()
    dsr = approve(make_request, staff_actor, kind="access")
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert stored_members(dsr) == {"main-app/events.json": EVENTS}


def test_a_json_result_is_stored_inside_the_subjects_zip(clock, mixpanel, make_request, staff_actor, project):
    mixpanel.result_body = EVENTS
    dsr = approve(make_request, staff_actor, kind="access")
    drive(clock)
    assert stored_members(dsr) == {"main-app/data.json": EVENTS}


def test_a_request_across_two_projects_gets_one_file_with_a_folder_each(
    clock, mixpanel, make_request, staff_actor, project
):
    other = MixpanelProject.objects.create(
        name="Web shop",
        mixpanel_project_id="2",
        project_token="tok2",
        oauth_token="oauth2",
        token_expires_on=date(2027, 1, 1),
        base_url_override=project.base_url_override,
    )
    mixpanel.statuses["task-0002"] = ["PENDING", "SUCCESS"]
    dsr = approve(make_request, staff_actor, kind="access", projects=[project, other])
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert set(stored_members(dsr)) == {"main-app/events.json", "web-shop/events.json"}


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            lambda mp, s: (
                setattr(s, "MIXPANEL_EXPORT_MAX_BYTES", 1000) or setattr(mp, "result_body", b"[" + b"1," * 2000 + b"1]")
            ),
            "permanent",
        ),
        (lambda mp, s: setattr(mp, "result_body", make_zip({"zeros.json": b"0" * 3_000_000})), "compression_ratio"),
        (lambda mp, s: setattr(mp, "result_body", make_zip({"../../outside.json": EVENTS})), "unsafe_path"),
        (lambda mp, s: setattr(mp, "result_url", lambda tid: f"https://attacker.example/{tid}.zip"), "permanent"),
        (
            lambda mp, s: mp.queue(
                "download", Reply(302, b"", {"Location": "http://169.254.169.254/latest/meta-data"})
            ),
            "permanent",
        ),
        (lambda mp, s: setattr(mp, "result_body", b"<html>not an export</html>"), "unknown_format"),
    ],
    ids=["oversized", "zip-bomb", "path-traversal", "foreign-host", "redirect-to-another-host", "not-an-export"],
)
def test_malicious_results_are_refused_and_the_request_goes_to_staff(
    clock, mixpanel, make_request, staff_actor, project, settings, setup, reason
):
    setup(mixpanel, settings)
    dsr = approve(make_request, staff_actor, kind="access")
    drive(clock)
    assert statuses(dsr) == [states.FAILED]
    task = MixpanelTask.objects.get()
    assert task.state == TaskState.NEEDS_ATTENTION and task.result_url == ""
    assert task.last_error.startswith("retrieval result refused")
    assert AuditEvent.objects.get(action="task.result_rejected").payload["reason"] == reason
    assert not SubjectExport.objects.exists()
    assert len(mixpanel.of("download")) <= 1  # refused at once, not retried


def test_a_wrong_api_secret_is_refused_with_advice_for_staff(clock, mixpanel, make_request, staff_actor, project):
    project.api_secret = "not-the-secret"
    project.save()
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(b"the-real-secret")
        archive.writestr("events.json", EVENTS)
    mixpanel.result_body = buffer.getvalue()
    dsr = approve(make_request, staff_actor, kind="access")
    drive(clock)
    assert statuses(dsr) == [states.FAILED]
    assert "API secret" in MixpanelTask.objects.get().last_error
    assert AuditEvent.objects.get(action="task.result_rejected").payload["reason"] == "password_wrong"


def test_after_the_secret_is_fixed_a_staff_retry_retrieves_again(clock, mixpanel, make_request, staff_actor, project):
    from gdpr_requests import pipeline

    project.api_secret = "the-real-secret"
    project.save()
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(b"the-real-secret")
        archive.writestr("events.json", EVENTS)
    mixpanel.result_body = b"garbage"
    dsr = approve(make_request, staff_actor, kind="access")
    drive(clock)
    assert statuses(dsr) == [states.FAILED]
    mixpanel.result_body = buffer.getvalue()
    pipeline.request_retry_tasks(request=dsr, actor=staff_actor)
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert len(mixpanel.of("create_retrieval")) == 2


def test_a_transient_download_failure_is_retried(clock, mixpanel, make_request, staff_actor, project):
    mixpanel.queue("download", Reply(503, b"busy"))
    dsr = approve(make_request, staff_actor, kind="access")
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    assert len(mixpanel.of("download")) == 2
