"""Email verification pages, new links, and the expiry of unconfirmed requests."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests import expiry, states, tokens

pytestmark = pytest.mark.django_db


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def verify_path(dsr) -> str:
    return reverse("portal:verify", args=[tokens.make_token(dsr, tokens.VERIFY)])


def assert_private(response) -> None:
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"]


def test_opening_the_link_shows_a_confirm_button_and_changes_nothing(client, make_request):
    dsr = make_request()
    events = AuditEvent.objects.count()
    response = client.get(verify_path(dsr))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Confirm my request" in html and dsr.reference in html
    assert 'method="post"' in html
    assert_private(response)
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED and dsr.verified_at is None
    assert AuditEvent.objects.count() == events
    # HEAD, as some mail scanners send, changes nothing either
    assert client.head(verify_path(dsr)).status_code == 200
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED


def test_pressing_confirm_verifies_the_request_and_shows_its_status(
    client, make_request, celery_eager, django_capture_on_commit_callbacks
):
    dsr = make_request()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(verify_path(dsr))
    assert response.status_code == 302
    assert response["Location"].startswith("/status/") and response["Location"].endswith("?confirmed=1")
    assert_private(response)
    dsr.refresh_from_db()
    assert dsr.status == states.VERIFIED
    event = AuditEvent.objects.get(request_reference=dsr.reference, action="request.verify")
    assert event.actor_type == "subject"
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "your email address is confirmed" in page.content.decode()
    assert [m.subject for m in mail.outbox] == [f"We have confirmed your privacy request {dsr.reference}"]


def test_a_used_link_gets_a_clear_page_and_changes_nothing(client, make_request):
    dsr = make_request()
    path = verify_path(dsr)
    client.post(path)
    events = AuditEvent.objects.count()
    for response in (client.get(path), client.post(path)):
        assert response.status_code == 410
        assert "This link has already been used" in response.content.decode()
        assert 'action="/link/"' in response.content.decode()
        assert_private(response)
    assert AuditEvent.objects.count() == events


def test_an_expired_link_offers_a_new_one(client, make_request, settings):
    dsr = make_request()
    path = verify_path(dsr)
    with time_machine.travel(timezone.now() + timedelta(hours=settings.DSR_VERIFICATION_HOURS, minutes=1)):
        response = client.post(path)
    assert response.status_code == 410
    html = response.content.decode()
    assert "This link has expired" in html and "Send me a new link" in html
    assert_private(response)
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED


@pytest.mark.parametrize("token", ["nonsense", "x" * 400, "%00", "é:é:é", "eyJyIjoxfQ:1tX:abc"])
def test_a_forged_link_gets_a_clear_page_not_an_error(client, db, token):
    response = client.get(f"/verify/{token}/")
    assert response.status_code == 404
    assert "This link does not work" in response.content.decode()
    assert_private(response)


def test_asking_for_a_new_link_revokes_the_old_one_and_sends_a_fresh_one(
    client, make_request, celery_eager, django_capture_on_commit_callbacks
):
    dsr = make_request(email="ana@example.org")
    old_path = verify_path(dsr)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("portal:resend"), {"email": "Ana@Example.org"})
    assert response.status_code == 302 and response["Location"] == reverse("portal:links_sent")
    assert client.get(old_path).status_code == 404
    (message,) = mail.outbox
    (link,) = [u for u in re.findall(r"http://\S+", message.body) if "/verify/" in u]
    assert client.post(path_of(link)).status_code == 302
    dsr.refresh_from_db()
    assert dsr.status == states.VERIFIED
    assert AuditEvent.objects.filter(request_reference=dsr.reference, action="request.links_resent").exists()


def test_a_new_link_for_a_confirmed_request_is_a_status_link(
    client, make_request, celery_eager, django_capture_on_commit_callbacks
):
    from gdpr_requests.requests import services

    services.request_confirm_email(request=make_request(email="ana@example.org"))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("portal:resend"), {"email": "ana@example.org"})
    (message,) = mail.outbox
    (link,) = [u for u in re.findall(r"http://\S+", message.body) if "/status/" in u]
    assert client.get(path_of(link)).status_code == 200


def test_the_new_link_form_answers_the_same_for_known_and_unknown_addresses(make_request):
    make_request(email="known@example.org")

    def ask(email: str):
        client = Client(enforce_csrf_checks=True)
        client.get(reverse("portal:resend"))
        token = client.cookies["csrftoken"].value
        posted = client.post(reverse("portal:resend"), {"email": email, "csrfmiddlewaretoken": token})
        page = client.get(posted["Location"])
        strip = lambda r: (r.status_code, {k: v for k, v in r.headers.items()}, r.content)  # noqa: E731
        return strip(posted), strip(page)

    assert ask("known@example.org") == ask("nobody@example.org")


def test_the_new_link_form_is_rate_limited_per_ip(settings, make_request):
    settings.DSR_PUBLIC_RATE_LIMITS = {"resend": {"ip": (2, 3600)}}
    make_request(email="ana@example.org")
    near, far = Client(REMOTE_ADDR="203.0.113.5"), Client(REMOTE_ADDR="198.51.100.9")
    for _ in range(2):
        assert near.post(reverse("portal:resend"), {"email": "ana@example.org"}).status_code == 302
    response = near.post(reverse("portal:resend"), {"email": "ana@example.org"})
    assert response.status_code == 429
    assert "Too many attempts" in response.content.decode()
    assert far.post(reverse("portal:resend"), {"email": "ana@example.org"}).status_code == 302


def test_strangers_asking_for_someones_links_cannot_lock_them_out_or_flood_them(
    settings, make_request, celery_eager, django_capture_on_commit_callbacks
):
    settings.DSR_LINK_EMAILS_PER_HOUR = 2
    dsr = make_request(email="ana@example.org")
    attacker = Client(REMOTE_ADDR="203.0.113.66")
    for _ in range(10):  # the default 10 an hour from one IP
        attacker.post(reverse("portal:resend"), {"email": "nobody@example.org"})
    for _ in range(6):
        assert attacker.post(reverse("portal:resend"), {"email": "ana@example.org"}).status_code == 429
    for n in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            response = Client(REMOTE_ADDR=f"198.51.100.{n}").post(
                reverse("portal:resend"), {"email": "ana@example.org"}
            )
        assert response.status_code == 302 and response["Location"] == reverse("portal:links_sent")
    # Two emails went out; the other resends wait, and revoked none of the links already sent.
    assert len(mail.outbox) == 2
    (link,) = [u for u in re.findall(r"http://\S+", mail.outbox[-1].body) if "/verify/" in u]
    assert Client().get(path_of(link)).status_code == 200
    assert AuditEvent.objects.filter(request_reference=dsr.reference, action="request.links_resent").count() == 5


def test_unconfirmed_requests_expire_after_the_configured_days_and_are_told(
    make_request, settings, celery_eager, django_capture_on_commit_callbacks
):
    old = make_request(email="old@example.org")
    DataSubjectRequest.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=settings.DSR_UNVERIFIED_EXPIRY_DAYS, hours=1)
    )
    fresh = make_request(email="fresh@example.org")
    asked_again = make_request(email="again@example.org")
    DataSubjectRequest.objects.filter(pk=asked_again.pk).update(
        created_at=timezone.now() - timedelta(days=settings.DSR_UNVERIFIED_EXPIRY_DAYS + 3),
        verification_sent_at=timezone.now() - timedelta(days=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert expiry.expire_unverified() == 1
    statuses = dict(DataSubjectRequest.objects.values_list("pk", "status"))
    assert statuses == {old.pk: states.EXPIRED, fresh.pk: states.UNVERIFIED, asked_again.pk: states.UNVERIFIED}
    (message,) = mail.outbox
    assert message.to == ["old@example.org"] and "expired" in message.subject
    assert expiry.expire_unverified() == 0  # idempotent


def _csrf_pair(path: str) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    page = client.get(path)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    return client, token


@pytest.mark.parametrize(
    ("headers", "secure", "accepted"),
    [
        # What a browser sends from a no-referrer page: Origin "null" and no Referer (over HTTPS too).
        ({"HTTP_ORIGIN": "null"}, False, True),
        ({}, True, True),
        ({"HTTP_ORIGIN": "null"}, True, True),
        # A foreign origin or referer is still refused.
        ({"HTTP_ORIGIN": "https://evil.example"}, False, False),
        ({"HTTP_REFERER": "https://evil.example/page"}, True, False),
    ],
)
def test_confirming_from_a_no_referrer_page_passes_csrf_but_a_foreign_origin_does_not(
    make_request, headers, secure, accepted
):
    dsr = make_request()
    path = verify_path(dsr)
    client, token = _csrf_pair(path)
    response = client.post(path, {"csrfmiddlewaretoken": token}, secure=secure, **headers)
    dsr.refresh_from_db()
    assert (response.status_code == 302, dsr.status == states.VERIFIED) == (accepted, accepted)
    if not accepted:
        assert response.status_code == 403 and "Please try again" in response.content.decode()


def test_the_csrf_token_is_still_required_on_token_pages(make_request):
    dsr = make_request()
    client, _token = _csrf_pair(verify_path(dsr))
    response = client.post(verify_path(dsr), {}, HTTP_ORIGIN="null")
    assert response.status_code == 403
    assert response["Referrer-Policy"] == "no-referrer"
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED


@pytest.fixture
def completed_access(make_request, staff_actor, celery_eager, django_capture_on_commit_callbacks):
    from gdpr_requests.requests import exports, services

    dsr = make_request(kind="access", email="ana@example.org")
    services.request_confirm_email(request=dsr)
    services.request_approve(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    exports.export_store(request=dsr, content=b'{"events": []}')
    with django_capture_on_commit_callbacks(execute=True):
        services.request_complete(request=dsr)
    mail.outbox.clear()
    return dsr


def test_a_lost_link_for_a_completed_access_request_leads_to_its_download(
    client, completed_access, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("portal:resend"), {"email": "ana@example.org"})
    assert response["Location"] == reverse("portal:links_sent")
    (message,) = mail.outbox
    (link,) = [u for u in re.findall(r"http://\S+", message.body) if "/status/" in u]
    page = client.get(path_of(link))
    assert page.status_code == 200
    (download,) = re.findall(r'href="(/download/[^"]+)"', page.content.decode())
    assert client.get(download).status_code == 200


def test_a_lost_link_is_not_sent_for_a_request_closed_longer_ago_than_its_status_page_lives(
    client, completed_access, settings, django_capture_on_commit_callbacks
):
    later = timezone.now() + timedelta(days=settings.DSR_STATUS_LINK_DAYS, hours=1)
    with time_machine.travel(later), django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("portal:resend"), {"email": "ana@example.org"})
    assert mail.outbox == []
    assert AuditEvent.objects.filter(action="portal.resend_unmatched").count() == 1


def test_the_new_link_form_answers_the_same_for_a_completed_request_and_an_unknown_address(completed_access):
    def ask(email: str):
        client = Client(enforce_csrf_checks=True)
        client.get(reverse("portal:resend"))
        token = client.cookies["csrftoken"].value
        posted = client.post(reverse("portal:resend"), {"email": email, "csrfmiddlewaretoken": token})
        page = client.get(posted["Location"])
        return (posted.status_code, posted["Location"], page.status_code, page.content)

    assert ask("ana@example.org") == ask("nobody@example.org")


def test_a_request_verified_by_staff_says_so_on_the_subjects_timeline(client, make_request, staff_actor):
    from gdpr_requests.requests import services

    dsr = services.request_record_identity(request=make_request(), how="passport", actor=staff_actor)
    html = client.get(reverse("portal:status", args=[tokens.make_token(dsr, tokens.STATUS)])).content.decode()
    assert "Identity confirmed by our staff" in html and "Email address confirmed" not in html


def test_a_request_confirmed_by_email_still_says_email_address_confirmed(client, make_request):
    from gdpr_requests.requests import services

    dsr = services.request_confirm_email(request=make_request())
    html = client.get(reverse("portal:status", args=[tokens.make_token(dsr, tokens.STATUS)])).content.decode()
    assert "Email address confirmed" in html and "Identity confirmed by our staff" not in html


def test_the_privacy_notice_is_a_link_when_set_and_left_out_when_not(client, settings, db):
    settings.PRIVACY_NOTICE_URL = "https://www.example.com/privacy"
    html = client.get(reverse("portal:request")).content.decode()
    assert '<a href="https://www.example.com/privacy">privacy notice</a>' in html
    settings.PRIVACY_NOTICE_URL = ""
    assert "privacy notice" not in client.get(reverse("portal:request")).content.decode()


def test_the_error_summary_lists_the_fields_in_the_order_the_form_shows_them(client, db):
    html = client.post(reverse("portal:request"), {}).content.decode()
    summary = html.split('class="error-summary__list"', 1)[1].split("</ul>", 1)[0]
    links = re.findall(r'href="#id_(\w+?)(?:_0)?"', summary)
    # The request form, not the language switcher's form in the page header.
    form = next(part for part in html.split("<form")[1:] if 'name="kind"' in part)
    shown = [name for name in re.findall(r'name="(\w+)"', form) if name in links]
    assert links and links == list(dict.fromkeys(shown))


def test_favicon_ico_redirects_to_the_icon(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
