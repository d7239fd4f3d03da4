"""Signed links: bound to a request, its nonce and a purpose; they expire, and verification is single-use."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core import signing
from django.utils import timezone

from gdpr_requests.portal import services as portal_services
from gdpr_requests.requests import services, tokens

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("purpose", tokens.PURPOSES)
def test_a_token_opens_its_own_request(make_request, purpose):
    dsr = make_request()
    assert tokens.read_token(tokens.make_token(dsr, purpose), purpose) == dsr


def _reason(token: str, purpose: str) -> str:
    with pytest.raises(tokens.LinkError) as caught:
        tokens.read_token(token, purpose)
    return caught.value.reason


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.mark.parametrize("where", [0, 5, -1, -5])
def test_a_tampered_token_is_invalid(make_request, where):
    token = tokens.make_token(make_request(), tokens.STATUS)
    assert _reason(_flip(token, where if where >= 0 else len(token) + where), tokens.STATUS) == tokens.INVALID


@pytest.mark.parametrize("junk", ["", "x", "a:b:c", "::", "é" * 50, "A" * 5000, "\x00", "null", "e30:1:abc"])
def test_junk_is_invalid(db, junk):
    assert _reason(junk, tokens.STATUS) == tokens.INVALID


def test_a_token_for_one_purpose_does_not_open_another(make_request):
    dsr = make_request()
    assert _reason(tokens.make_token(dsr, tokens.STATUS), tokens.DOWNLOAD) == tokens.INVALID
    assert _reason(tokens.make_token(dsr, tokens.STATUS), tokens.VERIFY) == tokens.INVALID


def test_a_token_names_one_request_and_cannot_be_pointed_at_another(make_request):
    mine = make_request(email="me@example.org")
    theirs = make_request(email="them@example.org")
    # Even a validly signed payload naming the other request fails: it carries my nonce, not theirs.
    forged = signing.dumps({"r": theirs.pk, "n": mine.link_nonce}, salt="gdpr_requests.portal.status")
    assert _reason(forged, tokens.STATUS) == tokens.INVALID
    assert tokens.read_token(tokens.make_token(mine, tokens.STATUS), tokens.STATUS) == mine


@pytest.mark.parametrize(
    ("purpose", "setting", "unit"),
    [
        (tokens.VERIFY, "DSR_VERIFICATION_HOURS", "hours"),
        (tokens.STATUS, "DSR_STATUS_LINK_DAYS", "days"),
        (tokens.DOWNLOAD, "DSR_EXPORT_DAYS", "days"),
    ],
)
def test_a_token_expires_after_its_lifetime(make_request, settings, purpose, setting, unit):
    dsr = make_request()
    token = tokens.make_token(dsr, purpose)
    lifetime = timedelta(**{unit: getattr(settings, setting)})
    with time_machine.travel(timezone.now() + lifetime - timedelta(minutes=1)):
        assert tokens.read_token(token, purpose) == dsr
    with time_machine.travel(timezone.now() + lifetime + timedelta(minutes=1)):
        assert _reason(token, purpose) == tokens.EXPIRED


def test_a_verification_link_works_once(make_request):
    dsr = make_request()
    token = tokens.make_token(dsr, tokens.VERIFY)
    services.request_confirm_email(request=tokens.read_token(token, tokens.VERIFY))
    with pytest.raises(tokens.LinkError) as replay:
        tokens.read_token(token, tokens.VERIFY)
    assert replay.value.reason == tokens.USED
    assert replay.value.request == dsr


def test_sending_new_links_revokes_every_older_link(make_request, celery_eager, django_capture_on_commit_callbacks):
    dsr = make_request(email="ana@example.org")
    old = {purpose: tokens.make_token(dsr, purpose) for purpose in tokens.PURPOSES}
    with django_capture_on_commit_callbacks(execute=True):
        portal_services.request_resend_links(email="ana@example.org")
    dsr.refresh_from_db()
    for purpose, token in old.items():
        assert _reason(token, purpose) == tokens.INVALID
    assert tokens.read_token(tokens.make_token(dsr, tokens.STATUS), tokens.STATUS) == dsr


def test_links_are_absolute_urls_on_the_site(make_request, settings):
    settings.SITE_URL = "https://privacy.example.com"
    dsr = make_request()
    assert tokens.status_url(dsr).startswith("https://privacy.example.com/status/")
    assert tokens.verification_url(dsr).startswith("https://privacy.example.com/verify/")
    assert tokens.download_url(dsr).startswith("https://privacy.example.com/download/")
    assert "person@example.org" not in tokens.status_url(dsr)
