"""The download step of a retrieval: fetch the result link at once from an allowed host, check it
(mixpanel/archive.py), and store it as the request's export, one folder per project in one ZIP, with the
readable overview (index.html, README.txt, one HTML page per data file: requests/readable_export.py)."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import zipfile
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr_requests.mixpanel import archive
from gdpr_requests.mixpanel.client import RATE_LIMITED, TRANSIENT, MixpanelError
from gdpr_requests.models import DataSubjectRequest, MixpanelProject, MixpanelTask, SubjectExport, TaskState
from gdpr_requests.pipeline.alerts import alert_staff_exports_unwritable
from gdpr_requests.pipeline.calls import download_hosts
from gdpr_requests.pipeline.outcomes import begin_attempt, give_up, retry_later
from gdpr_requests.pipeline.queries import live_requests, project_folder
from gdpr_requests.pipeline.settling import settle_now
from gdpr_requests.pipeline.task_updates import finish_step, task_audit
from gdpr_requests.requests import exports, readable_export

logger = logging.getLogger("gdpr_requests.pipeline")


def download(task: MixpanelTask, project: MixpanelProject, session: requests.Session) -> str:
    attempt = begin_attempt(task, project, session, operation="download")
    if isinstance(attempt, str):
        return attempt
    task, client = attempt.task, attempt.client
    try:
        content = client.download(
            url=task.result_url,
            allowed_hosts=download_hosts(project),
            max_bytes=int(settings.MIXPANEL_EXPORT_MAX_BYTES),
        )
    except MixpanelError as exc:
        if exc.kind in (TRANSIENT, RATE_LIMITED):
            return retry_later(task, exc, final_state=TaskState.NEEDS_ATTENTION)
        # A host we do not allow, a body over the size cap, or a dead link: staff must look at it.
        return _reject(task, reason=exc.kind, message=str(exc), http_status=exc.http_status)
    received_sha256 = hashlib.sha256(content).hexdigest()
    try:
        data = archive.inspect_result(content, api_secret=project.api_secret)
    except archive.ArchiveRejected as exc:
        return _reject(task, reason=exc.reason, message=str(exc), sha256=received_sha256, size=len(content))
    request = live_requests(task).first()
    if request is None:  # withdrawn while we downloaded
        with transaction.atomic():
            task.state = TaskState.CANCELLED
            task.result_url = ""
            task.finished_at = timezone.now()
            finish_step(task, next_at=None, fields=["state", "result_url", "finished_at"])
            task_audit(task, "task.cancelled", remote=False)
        return "cancelled"
    try:
        return _store(task, request, project, data, received_sha256=received_sha256, size=len(content))
    except OSError as exc:
        return _store_failed(task, exc)


def _store(
    task: MixpanelTask,
    request: DataSubjectRequest,
    project: MixpanelProject,
    data: bytes,
    *,
    received_sha256: str,
    size: int,
) -> str:
    merged = _merge_into_export(request, project_folder(project), data)
    with transaction.atomic():
        export = exports.export_store(
            request=request,
            content=merged,
            content_type="application/zip",
            original_name=f"{request.reference}-mixpanel-data.zip",
            task=task,
        )
        task = MixpanelTask.objects.select_for_update().get(pk=task.pk)
        task.state = TaskState.SUCCEEDED
        task.result_url = ""
        task.attempts = 0
        task.last_error = ""
        task.finished_at = timezone.now()
        finish_step(task, next_at=None, fields=["state", "result_url", "attempts", "last_error", "finished_at"])
        task_audit(
            task,
            "task.downloaded",
            sha256=received_sha256,
            size=size,
            stored_sha256=export.sha256,
            stored_size=export.size,
        )
        settle_now([request.pk])
    return "downloaded"


def _store_failed(task: MixpanelTask, exc: OSError) -> str:
    """The result came but cannot be written (EXPORTS_DIR unwritable, a full disk): our fault, not the subject's
    or Mixpanel's, and transient once someone fixes the folder. The task stays DOWNLOADING and retries with
    backoff; its last_error says why; staff are emailed (at most once a day)."""
    reason = exc.strerror or type(exc).__name__
    why = f"the downloaded result could not be written to the exports folder (EXPORTS_DIR): {reason}"
    logger.warning("mixpanel task %s: result could not be stored (%s)", task.pk, type(exc).__name__)
    with transaction.atomic():
        task_audit(task, "task.store_failed", error=type(exc).__name__, reason=reason[:100])
    outcome = retry_later(task, why, final_state=TaskState.NEEDS_ATTENTION)
    alert_staff_exports_unwritable(task_id=task.pk, error=f"{type(exc).__name__}: {reason}")
    return outcome


def _reject(task: MixpanelTask, *, reason: str, message: str, **details: Any) -> str:
    with transaction.atomic():
        task_audit(task, "task.result_rejected", reason=reason, **details)
    logger.warning("retrieval result of task %s refused: %s", task.pk, reason)
    return give_up(task, TaskState.NEEDS_ATTENTION, f"retrieval result refused: {message}")


def _merge_into_export(request: DataSubjectRequest, folder: str, data: bytes) -> bytes:
    """The subject's file: one ZIP with a folder per project. A request spanning projects gets its results
    one at a time, so earlier folders are carried over from the stored export; this project's is replaced."""
    output = io.BytesIO()
    prefix = f"{folder}/"
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as target:
        existing = SubjectExport.objects.filter(request=request, deleted_at__isnull=True).first()
        if existing is not None:
            try:
                with exports.export_open(existing) as handle, zipfile.ZipFile(handle) as previous:
                    for info in previous.infolist():
                        if (
                            not info.filename.startswith(prefix)
                            and not info.is_dir()
                            and not readable_export.is_generated(info.filename)
                        ):
                            _copy_member(previous, info, target, info.filename)
            except (OSError, zipfile.BadZipFile):
                logger.warning("earlier export of a request could not be read; replacing it")
        if archive.is_zip(data):
            with zipfile.ZipFile(io.BytesIO(data)) as source:
                for info in source.infolist():
                    if not info.is_dir():
                        _copy_member(source, info, target, prefix + info.filename.lstrip("/"))
        else:
            target.writestr(prefix + "data.json", data)
    # Made again from every project's files, so the overview covers all of them.
    with zipfile.ZipFile(output, "a", compression=zipfile.ZIP_DEFLATED) as target:
        facts = readable_export.ExportFacts(
            reference=request.reference,
            projects=list(request.projects.order_by("name").values_list("name", flat=True)),
            prepared_at=timezone.now(),
        )
        readable_export.add_readable_files(target, facts)
    return output.getvalue()


def _copy_member(source: zipfile.ZipFile, info: zipfile.ZipInfo, target: zipfile.ZipFile, name: str) -> None:
    entry = zipfile.ZipInfo(name, date_time=info.date_time)
    entry.compress_type = zipfile.ZIP_DEFLATED
    with source.open(info) as reader, target.open(entry, "w", force_zip64=info.file_size > 1 << 30) as writer:
        shutil.copyfileobj(reader, writer, 64 * 1024)
