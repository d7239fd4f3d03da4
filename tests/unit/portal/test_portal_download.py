"""Delivery of access results: link + one-time emailed code, lockout, expiry, counted and audited downloads."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.models import AuditEvent, SubjectExport
from gdpr_requests.requests import download_codes, exports, services, tokens

pytestmark = pytest.mark.django_db


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # A fixed date: the bytes must not depend on when the archive is built.
        archive.writestr(zipfile.ZipInfo("events.json", (2026, 1, 1, 0, 0, 0)), '[{"event": "Signed up"}]')
        archive.writestr(zipfile.ZipInfo("profile.json", (2026, 1, 1, 0, 0, 0)), '{"$name": "Ana"}')
    return buffer.getvalue()


@pytest.fixture
def completed_access(make_request, staff_actor, celery_eager, django_capture_on_commit_callbacks):
    dsr = make_request(kind="access", email="ana@example.org")
    services.request_confirm_email(request=dsr)
    services.request_approve(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    exports.export_store(request=dsr, content=zip_bytes())
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.request_complete(request=dsr)
    return dsr


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def download_path(dsr) -> str:
    return reverse("portal:download", args=[tokens.make_token(dsr, tokens.DOWNLOAD)])


def ask_for_code(client, dsr, capture) -> str:
    mail.outbox.clear()
    with capture(execute=True):
        response = client.post(download_path(dsr).rstrip("/") + "/code/")
    assert response.status_code == 302 and "sent=1" in response["Location"]
    (message,) = mail.outbox
    (code,) = re.findall(r"^\s+(\d{6})$", message.body, flags=re.M)
    return code


def enter(client, dsr, code: str):
    return client.post(download_path(dsr), {"code": code})


def test_the_completion_email_links_to_the_download_page(client, completed_access):
    (message,) = mail.outbox
    assert "complete" in message.subject
    (link,) = [u for u in re.findall(r"http://\S+", message.body) if "/download/" in u]
    response = client.get(path_of(link))
    assert response.status_code == 200
    html = response.content.decode()
    assert "A ZIP file of JSON files" in html and "Extract All" in html
    assert response["Referrer-Policy"] == "no-referrer" and "no-store" in response["Cache-Control"]
    assert "Download my data" in message.alternatives[0][0]


def test_the_emailed_code_downloads_the_file_once_and_the_download_is_audited(
    client, completed_access, django_capture_on_commit_callbacks
):
    code = ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    export = SubjectExport.objects.get(request=completed_access)
    assert export.code_hash and code not in export.code_hash
    assert timezone.now() + timedelta(minutes=14) < export.code_expires_at <= timezone.now() + timedelta(minutes=15)
    response = enter(client, completed_access, f" {code[:3]} {code[3:]} ")
    body = fetch_file(client, response)
    assert body == zip_bytes()
    export.refresh_from_db()
    assert export.download_count == 1 and export.last_downloaded_at is not None and not export.code_hash
    event = AuditEvent.objects.get(request_reference=completed_access.reference, action="export.downloaded")
    assert event.actor_type == "subject" and event.payload["sha256"] == export.sha256
    # The code is used up: the same code again is refused, and a new code downloads again (counted).
    again = enter(client, completed_access, code)
    assert again.status_code == 400
    assert enter(client, completed_access, ask_for_code(client, completed_access, django_capture_on_commit_callbacks))[
        "Location"
    ]
    export.refresh_from_db()
    assert export.download_count == 2
    assert AuditEvent.objects.filter(action="export.downloaded").count() == 2


def fetch_file(client, response) -> bytes:
    """Follow a successful code entry: the "download started" page, then the file it starts."""
    assert response.status_code == 302 and "/started/?ticket=" in response["Location"]
    started = client.get(response["Location"])
    assert started.status_code == 200
    refresh = started["Refresh"]
    file_path = refresh.split("url=", 1)[1]
    download = client.get(file_path)
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment; filename=")
    assert "no-store" in download["Cache-Control"] and download["Referrer-Policy"] == "no-referrer"
    return b"".join(download.streaming_content)


def test_after_a_wrong_code_the_right_one_leads_to_a_page_saying_the_download_started(
    client, completed_access, django_capture_on_commit_callbacks
):
    code = ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    wrong = enter(client, completed_access, f"{(int(code) + 1) % 1_000_000:06d}")
    assert "That code is not right" in wrong.content.decode()
    response = enter(client, completed_access, code)
    # Not the form again (with the earlier error still on screen): a redirect to a page about the download.
    assert response.status_code == 302
    started = client.get(response["Location"])
    html = started.content.decode()
    assert "Your download has started" in html and "There is a problem" not in html
    export = SubjectExport.objects.get(request=completed_access)
    assert f"available until {export.expires_at:%-d %B %Y}" in html
    assert started["Refresh"].startswith("0; url=/download/")
    assert started["Referrer-Policy"] == "no-referrer" and "no-store" in started["Cache-Control"]
    file_path = started["Refresh"].split("url=", 1)[1]
    assert client.get(file_path).status_code == 200
    # The file link works once: afterwards the page says what to do, and the started page stops re-fetching.
    used = client.get(file_path)
    assert used.status_code == 410 and "Email me a code" in used.content.decode()
    assert "Refresh" not in client.get(response["Location"])
    assert SubjectExport.objects.get(pk=export.pk).download_count == 1


def test_a_forged_or_foreign_ticket_downloads_nothing(client, completed_access, make_request):
    path = download_path(completed_access)
    assert client.get(f"{path}file/?ticket=nonsense").status_code == 410
    assert client.get(f"{path}file/").status_code == 410
    # Nor does it claim a download started: it leads back to the page that offers a code.
    started = client.get(f"{path}started/?ticket=nonsense")
    assert started.status_code == 302 and started["Location"] == path


def test_reusing_a_code_says_to_ask_for_a_new_one_and_not_that_one_was_sent(
    client, completed_access, django_capture_on_commit_callbacks
):
    code = ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    assert enter(client, completed_access, code).status_code == 302
    again = enter(client, completed_access, code)
    html = again.content.decode()
    assert again.status_code == 400
    assert "already been used" in html and "Email me a code" in html
    assert "We have sent a 6-digit code" not in html


def test_a_wrong_code_is_refused_and_five_wrong_codes_lock_it(
    client, completed_access, django_capture_on_commit_callbacks
):
    code = ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    first = enter(client, completed_access, wrong)
    assert first.status_code == 400 and "That code is not right" in first.content.decode()
    for _ in range(4):
        enter(client, completed_access, wrong)
    export = SubjectExport.objects.get(request=completed_access)
    assert export.code_attempts == 5
    locked = enter(client, completed_access, code)  # even the right code, once locked
    assert locked.status_code == 400 and "too many times" in locked.content.decode()
    assert SubjectExport.objects.get(request=completed_access).download_count == 0
    assert AuditEvent.objects.filter(action="export.code_rejected").count() == 5
    # A new code starts afresh.
    assert (
        enter(
            client, completed_access, ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
        ).status_code
        == 302
    )


def test_a_code_expires_after_fifteen_minutes(client, completed_access, django_capture_on_commit_callbacks):
    code = ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        response = enter(client, completed_access, code)
    assert response.status_code == 400 and "That code has expired" in response.content.decode()


def test_the_download_page_states_the_code_lifetime_from_download_codes(
    client, completed_access, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(download_codes, "CODE_LIFETIME", timedelta(minutes=7))
    ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    html = client.get(download_path(completed_access) + "?sent=1").content.decode()
    assert "It works for 7 minutes." in html


def test_a_head_request_shows_the_page_and_uses_nothing(client, completed_access):
    response = client.head(download_path(completed_access))
    assert response.status_code == 200 and not response.content
    assert SubjectExport.objects.get(request=completed_access).code_attempts == 0
    assert not AuditEvent.objects.filter(action__startswith="export.code").exists()


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "\uff11\uff12\uff13\uff14\uff15\uff16", "\x00" * 6])
def test_a_malformed_code_is_refused_without_counting_an_attempt(client, completed_access, code):
    response = enter(client, completed_access, code)
    assert response.status_code == 400
    assert "code" in response.context["form"].errors["code"][0].lower()
    assert SubjectExport.objects.get(request=completed_access).code_attempts == 0


def test_code_entry_and_sending_are_rate_limited(
    client, completed_access, settings, django_capture_on_commit_callbacks
):
    settings.DSR_PUBLIC_RATE_LIMITS = {
        "code_entry": {"ip": (100, 3600), "request": (3, 3600)},
        "code_send": {"ip": (100, 3600), "request": (2, 3600)},
    }
    for _ in range(3):
        assert enter(client, completed_access, "000000").status_code == 400
    assert enter(client, completed_access, "000000").status_code == 429
    code_path = download_path(completed_access).rstrip("/") + "/code/"
    assert client.post(code_path).status_code == 302
    assert client.post(code_path).status_code == 302
    response = client.post(code_path)
    assert response.status_code == 429 and "Too many attempts" in response.content.decode()


def test_an_expired_or_deleted_file_gets_a_clear_page(client, completed_access, settings):
    export = SubjectExport.objects.get(request=completed_access)
    path = download_path(completed_access)
    with time_machine.travel(export.expires_at + timedelta(minutes=1)):
        response = client.get(path)
    assert response.status_code == 410 and "no longer available" in response.content.decode()
    exports.export_delete(export=export, why="test")
    for response in (client.get(path), enter(client, completed_access, "123456"), client.post(path + "code/")):
        assert response.status_code == 410
        assert "This download is no longer available" in response.content.decode()


def test_a_missing_file_on_disk_is_a_clear_page_not_an_error(
    client, completed_access, django_capture_on_commit_callbacks
):
    code = ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    export = SubjectExport.objects.get(request=completed_access)
    (exports._path(export.file_path)).unlink()
    response = enter(client, completed_access, code)
    assert response.status_code == 410
    assert SubjectExport.objects.get(pk=export.pk).download_count == 0


def test_a_download_link_opens_no_other_request_and_no_status_page(client, completed_access, make_request):
    other = make_request(kind="access", email="other@example.org")
    assert client.get(download_path(other)).status_code == 410  # a real link, but nothing to download
    status_token = tokens.make_token(completed_access, tokens.STATUS)
    assert client.get(reverse("portal:download", args=[status_token])).status_code == 404
    assert download_codes.export_for(make_request(kind="deletion", email="d@example.org")) is None


def test_the_status_page_offers_the_download(client, completed_access):
    response = client.get(reverse("portal:status", args=[tokens.make_token(completed_access, tokens.STATUS)]))
    assert "Your data is ready" in response.content.decode()
    assert 'href="/download/' in response.content.decode()


def test_the_file_link_of_a_started_download_expires_after_five_minutes(
    client, completed_access, django_capture_on_commit_callbacks
):
    code = ask_for_code(client, completed_access, django_capture_on_commit_callbacks)
    started = client.get(enter(client, completed_access, code)["Location"])
    file_path = started["Refresh"].split("url=", 1)[1]
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        late = client.get(file_path)
    assert late.status_code == 410 and "Email me a code" in late.content.decode()
