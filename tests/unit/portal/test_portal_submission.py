"""Submitting the request form: the neutral answer, duplicates, rate limits, honeypot, CSRF."""

from __future__ import annotations

import re
import statistics
import time
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests import states

pytestmark = pytest.mark.django_db


FORM = {
    "kind": "access",
    "name": "Ana Núñez",
    "email": "ana@example.org",
    "residence": "eea_uk",
    "distinct_ids": "user-42\nuser-42\n  anon-7 ",
    "message": "",
}


def post_form(client: Client, **overrides: str):
    data = {**FORM, **overrides}
    return client.post(reverse("portal:request"), data)


def links_in(message) -> list[str]:
    return re.findall(r"http://[^\s\"<>]+", message.body)


def test_the_form_page_renders_with_labels_hints_and_a_csrf_token(client):
    response = client.get("/request/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html
    assert '<label class="field__label" for="id_email">Your email address</label>' in html
    assert 'aria-describedby="id_email_helptext"' in html
    assert "the user id you have in our product, if you know it" in html.lower()
    assert "<script>" not in html and "style=" not in html  # the CSP forbids inline code


def test_a_valid_submission_creates_an_unverified_web_request_and_emails_a_confirm_link(
    client, celery_eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_form(client)
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:request_sent")
    dsr = DataSubjectRequest.objects.get()
    assert (dsr.status, dsr.channel, dsr.kind, dsr.regulation) == (states.UNVERIFIED, "web", "access", "gdpr")
    assert dsr.distinct_ids == ["user-42", "anon-7"]
    assert dsr.requester_name == "Ana Núñez"
    assert AuditEvent.objects.filter(request_reference=dsr.reference, action="request.created").get().actor_type == (
        "subject"
    )
    (message,) = mail.outbox
    assert message.to == ["ana@example.org"]
    assert dsr.reference in message.subject
    assert any("/verify/" in link for link in links_in(message))
    assert message.alternatives and message.alternatives[0][1] == "text/html"


@pytest.mark.parametrize(
    ("residence", "kind", "disclosure", "regulation", "stored_disclosure"),
    [
        ("eea_uk", "access", "", "gdpr", ""),
        ("california", "access", "Categories", "ccpa", "Categories"),
        ("california", "deletion", "Categories", "ccpa", ""),
        ("elsewhere", "deletion", "", "gdpr", ""),
    ],
)
def test_where_the_person_lives_decides_the_law(client, residence, kind, disclosure, regulation, stored_disclosure):
    response = post_form(client, residence=residence, kind=kind, disclosure_type=disclosure)
    assert response.status_code == 302
    dsr = DataSubjectRequest.objects.get()
    assert (dsr.regulation, dsr.disclosure_type) == (regulation, stored_disclosure)


def test_a_california_access_request_must_say_what_it_wants_to_know(client):
    response = post_form(client, residence="california", kind="access", disclosure_type="")
    assert response.status_code == 200
    assert "Choose what you want to know about your data." in response.content.decode()
    assert not DataSubjectRequest.objects.exists()


def _csrf_client() -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    client.get(reverse("portal:request"))
    return client, client.cookies["csrftoken"].value


def _submit_and_follow(email: str):
    client, token = _csrf_client()
    posted = client.post(reverse("portal:request"), {**FORM, "email": email, "csrfmiddlewaretoken": token})
    page = client.get(posted["Location"])
    return posted, page


def _comparable(response) -> tuple[int, dict[str, str], bytes, set[str]]:
    headers = {name: value for name, value in response.headers.items() if name.lower() != "set-cookie"}
    return response.status_code, headers, response.content, set(response.cookies) - {"csrftoken"}


def test_known_and_unknown_emails_get_the_same_status_body_and_headers(make_request, celery_eager):
    make_request(kind="access", email="known@example.org")  # an open request: the known branch is a duplicate
    known_post, known_page = _submit_and_follow("known@example.org")
    unknown_post, unknown_page = _submit_and_follow("stranger@example.org")
    assert known_post.status_code == 302
    assert _comparable(known_post) == _comparable(unknown_post)
    assert _comparable(known_page) == _comparable(unknown_page)
    assert DataSubjectRequest.objects.filter(email_hash__isnull=False).count() == 2  # one new row only


def test_known_and_unknown_emails_take_about_as_long(make_request, settings):
    # Both branches write one audit event and queue one email; the new-request branch also inserts the row.
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False
    make_request(kind="access", email="known@example.org")
    client = Client()
    known: list[float] = []
    unknown: list[float] = []
    for n in range(25):
        for email, timings in (("known@example.org", known), (f"new-{n}@example.org", unknown)):
            start = time.perf_counter()
            assert post_form(client, email=email).status_code == 302
            timings.append(time.perf_counter() - start)
    ratio = statistics.median(known) / statistics.median(unknown)
    assert 0.5 < ratio < 2, ratio


def test_a_duplicate_is_linked_to_the_open_request_and_gets_its_status_link(
    client, make_request, celery_eager, django_capture_on_commit_callbacks
):
    existing = make_request(kind="access", email="ana@example.org")
    from gdpr_requests.requests import services

    services.request_confirm_email(request=existing)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = post_form(client, email="  ANA@example.org ")
    assert response.status_code == 302
    assert DataSubjectRequest.objects.count() == 1
    event = AuditEvent.objects.get(action="request.duplicate_submitted")
    assert event.request_reference == existing.reference
    assert "ana@example.org" not in str(event.payload)
    (message,) = mail.outbox
    assert existing.reference in message.subject
    (status_link,) = [link for link in links_in(message) if "/status/" in link]
    page = client.get(status_link.removeprefix("http://127.0.0.1:8000"))
    assert page.status_code == 200 and existing.reference in page.content.decode()


def test_an_unverified_duplicate_gets_a_fresh_confirm_link(
    client, make_request, celery_eager, django_capture_on_commit_callbacks
):
    existing = make_request(kind="deletion", email="ana@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        post_form(client, kind="deletion")
    assert DataSubjectRequest.objects.count() == 1
    (message,) = mail.outbox
    (confirm,) = [link for link in links_in(message) if "/verify/" in link]
    assert client.get(confirm.removeprefix("http://127.0.0.1:8000")).status_code == 200
    assert existing.reference in message.body


@pytest.mark.parametrize(
    "existing",
    [
        {"kind": "deletion"},  # another kind
        {"kind": "access", "email": "someone-else@example.org"},
    ],
)
def test_requests_of_another_kind_or_person_are_not_duplicates(client, make_request, existing):
    make_request(**existing)
    post_form(client)
    assert DataSubjectRequest.objects.count() == 2


def test_a_closed_or_old_request_is_not_a_duplicate(client, make_request, staff_actor, settings):
    from datetime import timedelta

    from django.utils import timezone

    from gdpr_requests.requests import services

    closed = make_request(kind="access", email="ana@example.org")
    services.request_reject(request=closed, reason="not our customer", actor=staff_actor)
    make_request(
        kind="access",
        email="ana@example.org",
        received_at=timezone.now() - timedelta(days=settings.DSR_DUPLICATE_WINDOW_DAYS + 1),
    )
    post_form(client)
    assert DataSubjectRequest.objects.count() == 3


def test_the_honeypot_gets_the_neutral_page_and_creates_nothing(client, celery_eager):
    response = post_form(client, website="http://spam.example")
    assert response.status_code == 302 and response["Location"] == reverse("portal:request_sent")
    assert not DataSubjectRequest.objects.exists()
    assert not mail.outbox


def test_every_post_needs_a_csrf_token_and_a_failure_gets_a_friendly_page():
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("portal:request"), FORM)
    assert response.status_code == 403
    assert "Please try again" in response.content.decode()
    assert not DataSubjectRequest.objects.exists()


def test_a_client_over_its_ip_limit_cannot_lock_an_address_out(celery_eager, django_capture_on_commit_callbacks):
    attacker = Client(REMOTE_ADDR="203.0.113.66")
    for _ in range(20):  # the default 20 posts an hour from one IP (invalid ones count too)
        post_form(attacker, email="not-an-email")
    for _ in range(6):
        assert post_form(attacker, email="victim@example.org").status_code == 429
    victim = Client(REMOTE_ADDR="198.51.100.7")
    with django_capture_on_commit_callbacks(execute=True):
        response = post_form(victim, email="victim@example.org")
    assert response.status_code == 302 and response["Location"] == reverse("portal:request_sent")
    assert DataSubjectRequest.objects.get().reference in mail.outbox[0].subject
    assert [m.to for m in mail.outbox] == [["victim@example.org"]]


def test_submissions_naming_one_address_are_all_taken_but_email_it_at_most_n_times_an_hour(
    settings, celery_eager, django_capture_on_commit_callbacks
):
    from gdpr_requests.notifications import outbox

    settings.DSR_LINK_EMAILS_PER_HOUR = 3
    for n in range(6):  # a stranger with many addresses of their own
        with django_capture_on_commit_callbacks(execute=True):
            response = post_form(Client(REMOTE_ADDR=f"203.0.113.{n}"), email="victim@example.org", name="Mallory")
        assert response.status_code == 302 and response["Location"] == reverse("portal:request_sent")
    with django_capture_on_commit_callbacks(execute=True):
        own = post_form(Client(REMOTE_ADDR="198.51.100.7"), email="victim@example.org")
    assert own.status_code == 302 and own["Location"] == reverse("portal:request_sent")
    dsr = DataSubjectRequest.objects.get()  # the later ones are duplicates of the first
    assert AuditEvent.objects.filter(action="request.duplicate_submitted").count() == 6
    assert len(mail.outbox) == 3

    # The waiting emails were coalesced: an hour later the sweep sends one, with a link that works.
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        outbox.send_pending()
        assert len(mail.outbox) == 4
        assert outbox.send_pending() == 0
        (confirm,) = [link for link in links_in(mail.outbox[-1]) if "/verify/" in link]
        assert Client().get(confirm.removeprefix("http://127.0.0.1:8000")).status_code == 200
    assert dsr.reference in mail.outbox[-1].subject
    assert outbox.oldest_unsent_email_age_seconds() is None


def test_submissions_are_rate_limited_per_ip(settings):
    settings.DSR_PUBLIC_RATE_LIMITS = {"submit": {"ip": (3, 3600), "email": (100, 3600)}}
    near, far = Client(REMOTE_ADDR="203.0.113.5"), Client(REMOTE_ADDR="198.51.100.9")
    for n in range(3):
        assert post_form(near, email=f"p{n}@example.org").status_code == 302
    assert post_form(near, email="p9@example.org").status_code == 429
    # invalid posts count too: a script cannot probe for free
    assert post_form(near, email="not-an-email").status_code == 429
    assert post_form(far, email="p9@example.org").status_code == 302


def test_rate_limits_can_be_turned_off(client, settings):
    settings.DSR_PUBLIC_RATE_LIMITS = {"submit": {"ip": (1, 3600), "email": (1, 3600)}}
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False
    for kind in ("access", "deletion", "access"):
        assert post_form(client, kind=kind).status_code == 302
