"""Subject exports: the file fetched for an access request, stored privately under EXPORTS_DIR.

The pipeline stores a file with ``export_store``; the portal streams it with ``export_open`` after the subject
proves they hold the emailed link and code; ``delete_expired`` removes files past DSR_EXPORT_DAYS.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import DataSubjectRequest, MixpanelTask, SubjectExport


def _path(relative: str) -> Path:
    return Path(settings.EXPORTS_DIR) / relative


def export_store(
    *,
    request: DataSubjectRequest,
    content: bytes,
    content_type: str = "application/zip",
    original_name: str = "",
    task: MixpanelTask | None = None,
) -> SubjectExport:
    """Write ``content`` to a private file and record it (with its sha256) as the request's export.

    Idempotent per request: storing again replaces the earlier file (a retried download).
    """
    digest = hashlib.sha256(content).hexdigest()
    relative = f"{request.reference}-{secrets.token_hex(8)}.bin"
    target = _path(relative)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written under a temporary name, then renamed: a crash never leaves a half file behind a row.
    partial = target.with_suffix(".part")
    with open(partial, "wb") as handle:
        handle.write(content)
    partial.chmod(0o600)
    partial.replace(target)
    expires = timezone.now() + timedelta(days=settings.DSR_EXPORT_DAYS)
    with transaction.atomic():
        old = SubjectExport.objects.select_for_update().filter(request=request).first()
        old_path = old.file_path if old else ""
        export, _ = SubjectExport.objects.update_or_create(
            request=request,
            defaults={
                "task": task,
                "file_path": relative,
                "original_name": original_name[:100],
                "content_type": content_type,
                "sha256": digest,
                "size": len(content),
                "expires_at": expires,
                "deleted_at": None,
            },
        )
        audit_record(
            action="export.stored",
            actor=Actor.system(),
            request_reference=request.reference,
            payload={"sha256": digest, "size": len(content), "expires_at": expires.isoformat()},
        )
    if old_path and old_path != relative:
        transaction.on_commit(lambda: _path(old_path).unlink(missing_ok=True))
    return export


def export_open(export: SubjectExport) -> BinaryIO:
    """Open the stored file for streaming. The caller records the download (audited)."""
    return open(_path(export.file_path), "rb")


def export_delete(*, export: SubjectExport, why: str) -> None:
    with transaction.atomic():
        updated = SubjectExport.objects.filter(pk=export.pk, deleted_at__isnull=True).update(deleted_at=timezone.now())
        if not updated:
            return
        audit_record(
            action="export.deleted",
            actor=Actor.system(),
            request_reference=export.request.reference,
            payload={"why": why, "sha256": export.sha256},
        )
        path = export.file_path
        transaction.on_commit(lambda: _path(path).unlink(missing_ok=True))


def delete_expired() -> int:
    """Delete every export past its expiry; returns how many."""
    due = SubjectExport.objects.filter(deleted_at__isnull=True, expires_at__lte=timezone.now()).select_related(
        "request"
    )
    count = 0
    for export in due.iterator():
        export_delete(export=export, why="expired")
        count += 1
    return count
