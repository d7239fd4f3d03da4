"""Signed links in the emails to data subjects: email verification, request status, export download.

A token is ``django.core.signing.dumps({"r": pk, "n": link_nonce})`` under a salt per purpose, so a status
token never opens a download page and a forged or edited token fails the signature. Binding the request's
``link_nonce`` lets us revoke every older link of a request by rotating the nonce (a resend does). Links age
out: verification after DSR_VERIFICATION_HOURS, status after DSR_STATUS_LINK_DAYS, download after
DSR_EXPORT_DAYS. A verification link is single-use: it works only while the request is still unverified.
No personal data is in a token; the request id is only readable, not forgeable.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.crypto import constant_time_compare

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.requests import states

VERIFY = "verify"
STATUS = "status"
DOWNLOAD = "download"
PURPOSES = (VERIFY, STATUS, DOWNLOAD)

# Longer than any token we issue (about 90 characters); refusing early keeps junk off the signer and the DB.
MAX_TOKEN_LENGTH = 300

INVALID = "invalid"
EXPIRED = "expired"
USED = "used"


class LinkError(Exception):
    """A link that cannot be used: ``reason`` is invalid (forged, edited, revoked), expired or used."""

    def __init__(self, reason: str, request: DataSubjectRequest | None = None) -> None:
        super().__init__(f"link {reason}")
        self.reason = reason
        # Set only for a used verification link (its owner proved the request is theirs).
        self.request = request


def _salt(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    return f"gdpr_requests.portal.{purpose}"


def max_age(purpose: str) -> timedelta:
    if purpose == VERIFY:
        return timedelta(hours=settings.DSR_VERIFICATION_HOURS)
    if purpose == STATUS:
        return timedelta(days=settings.DSR_STATUS_LINK_DAYS)
    return timedelta(days=settings.DSR_EXPORT_DAYS)


def make_token(request: DataSubjectRequest, purpose: str) -> str:
    return signing.dumps({"r": request.pk, "n": request.link_nonce}, salt=_salt(purpose))


def read_token(token: str, purpose: str) -> DataSubjectRequest:
    """The request a token was issued for, or LinkError saying why it cannot be used."""
    salt = _salt(purpose)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise LinkError(INVALID)
    try:
        data = signing.loads(token, salt=salt, max_age=max_age(purpose))
    except signing.SignatureExpired:
        raise LinkError(EXPIRED) from None
    except (signing.BadSignature, ValueError, UnicodeError):
        raise LinkError(INVALID) from None
    if not isinstance(data, dict) or not isinstance(data.get("r"), int) or not isinstance(data.get("n"), str):
        raise LinkError(INVALID)
    request = DataSubjectRequest.objects.filter(pk=data["r"]).first()
    # A rotated nonce revokes the link: it reads as invalid, like a forgery (nothing to tell the holder).
    if request is None or not constant_time_compare(request.link_nonce, data["n"]):
        raise LinkError(INVALID)
    if purpose == VERIFY and request.status != states.UNVERIFIED:
        raise LinkError(USED, request)
    return request


def _absolute(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def verification_url(request: DataSubjectRequest) -> str:
    return _absolute(reverse("portal:verify", args=[make_token(request, VERIFY)]))


def status_url(request: DataSubjectRequest) -> str:
    return _absolute(reverse("portal:status", args=[make_token(request, STATUS)]))


def download_url(request: DataSubjectRequest) -> str:
    return _absolute(reverse("portal:download", args=[make_token(request, DOWNLOAD)]))
