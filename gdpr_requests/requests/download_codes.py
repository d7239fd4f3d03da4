"""One-time download codes for an access request's export, and counted downloads.

The code is sent by email at the moment the subject asks to download (notifications/rendering.py makes it when
the email is built); only its keyed hash is stored, with an expiry and an attempt counter.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from enum import StrEnum

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import DataSubjectRequest, RequestKind, SubjectExport

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=15)
CODE_MAX_ATTEMPTS = 5


class CodeResult(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"
    EXPIRED = "expired"
    NO_CODE = "no_code"
    GONE = "gone"


def _code_hash(export: SubjectExport, code: str) -> str:
    # Keyed with SECRET_KEY and bound to the export: a copied table reveals nothing without the key.
    return salted_hmac("gdpr_requests.download-code", f"{export.pk}:{code}", algorithm="sha256").hexdigest()


def export_code_issue(*, export: SubjectExport) -> str:
    """Make a new one-time code for ``export`` (replacing any earlier one) and return it for the email.

    Only its keyed hash is stored, with an expiry and a fresh attempt counter.
    """
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    expires = timezone.now() + CODE_LIFETIME
    with transaction.atomic():
        SubjectExport.objects.filter(pk=export.pk).update(
            code_hash=_code_hash(export, code), code_expires_at=expires, code_attempts=0
        )
        audit_record(
            action="export.code_issued",
            actor=Actor.system(),
            request_reference=export.request.reference,
            payload={"expires_at": expires.isoformat()},
        )
    return code


def export_download_authorise(*, export: SubjectExport, code: str) -> CodeResult:
    """Check a download code. The right one is used up and the download counted and audited at once."""
    code = "".join(ch for ch in code if ch.isdigit())[: CODE_DIGITS + 1]
    with transaction.atomic():
        current = SubjectExport.objects.select_for_update().select_related("request").get(pk=export.pk)
        now = timezone.now()
        if not current.is_available:
            return CodeResult.GONE
        if not current.code_hash:
            return CodeResult.NO_CODE
        if current.code_attempts >= CODE_MAX_ATTEMPTS:
            return CodeResult.LOCKED
        if current.code_expires_at is None or current.code_expires_at <= now:
            return CodeResult.EXPIRED
        reference = current.request.reference
        if len(code) == CODE_DIGITS and constant_time_compare(_code_hash(current, code), current.code_hash):
            SubjectExport.objects.filter(pk=current.pk).update(
                code_hash="",
                code_expires_at=None,
                code_attempts=0,
                download_count=F("download_count") + 1,
                last_downloaded_at=now,
            )
            audit_record(
                action="export.downloaded",
                actor=Actor.subject(),
                request_reference=reference,
                payload={"sha256": current.sha256, "size": current.size, "download_number": current.download_count + 1},
            )
            return CodeResult.OK
        attempts = current.code_attempts + 1
        SubjectExport.objects.filter(pk=current.pk).update(code_attempts=attempts)
        audit_record(
            action="export.code_rejected",
            actor=Actor.subject(),
            request_reference=reference,
            payload={"attempts": attempts, "locked": attempts >= CODE_MAX_ATTEMPTS},
        )
        return CodeResult.LOCKED if attempts >= CODE_MAX_ATTEMPTS else CodeResult.WRONG


def export_for(request: DataSubjectRequest) -> SubjectExport | None:
    """The access request's export, if it ever had one."""
    if request.kind != RequestKind.ACCESS:
        return None
    return SubjectExport.objects.filter(request=request).first()
